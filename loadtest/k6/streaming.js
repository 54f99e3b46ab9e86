// Streaming load: `"stream": true` chat completions. Time to first token
// (TTFT) is measured as the time to the first byte of the response
// (k6's timings.waiting): sluice holds the response head back until the
// model server's first SSE event has arrived, so the first byte a client
// gets is the head together with that first event. Thresholds on TTFT
// (p95/p99) and on the whole stream, and on errors.
//
//   k6 run loadtest/k6/streaming.js
//   BASE_URL=https://gw.example TTFT_P95_MS=800 k6 run loadtest/k6/streaming.js
//
// Against `sluice demo` (or any sluice in front of `sluice mock-upstream`),
// MOCK_FIRST_DELAY_MS and MOCK_DELAY_MS make the mock model server wait
// before its first event and between events (x-mock-* headers, passed on
// by sluice), so TTFT and whole-stream time differ as with a real model.

import http from 'k6/http';
import { check } from 'k6';
import { Trend, Rate, Counter } from 'k6/metrics';
import { CHAT_URL, headers, chatBody, num, str, preflight, SUMMARY_STATS } from './lib.js';

const ttft = new Trend('sluice_ttft', true);
const complete = new Rate('stream_complete');
const events = new Counter('sse_events');

export const options = {
  scenarios: {
    streams: {
      executor: 'constant-vus',
      vus: num('VUS', 16),
      duration: str('DURATION', '30s'),
    },
  },
  thresholds: {
    http_req_failed: [`rate<${num('FAIL_RATE', 0.001)}`],
    sluice_ttft: [`p(95)<${num('TTFT_P95_MS', 200)}`, `p(99)<${num('TTFT_P99_MS', 500)}`],
    'http_req_duration{name:stream}': [`p(95)<${num('P95_MS', 2000)}`, `p(99)<${num('P99_MS', 5000)}`],
    stream_complete: ['rate>0.999'],
  },
  summaryTrendStats: SUMMARY_STATS,
};

const streamHeaders = Object.assign({}, headers);
if (__ENV.MOCK_FIRST_DELAY_MS) streamHeaders['x-mock-first-delay-ms'] = __ENV.MOCK_FIRST_DELAY_MS;
if (__ENV.MOCK_DELAY_MS) streamHeaders['x-mock-delay-ms'] = __ENV.MOCK_DELAY_MS;

export function setup() {
  return preflight();
}

export default function () {
  const body = chatBody(`Tell me a short story, number ${__ITER}.`, {
    stream: true,
    stream_options: { include_usage: true },
  });
  const res = http.post(CHAT_URL, body, { headers: streamHeaders, tags: { name: 'stream' } });
  if (res.status === 200) {
    // Time to the first byte = time to the first SSE event (see above).
    ttft.add(res.timings.waiting);
  }
  const text = res.body || '';
  const n = (text.match(/^data: /gm) || []).length;
  events.add(n);
  const done = res.status === 200 && text.includes('data: [DONE]');
  complete.add(done);
  check(res, {
    'status 200': (r) => r.status === 200,
    'event stream': (r) => String(r.headers['Content-Type'] || '').startsWith('text/event-stream'),
    'ends with [DONE]': () => done,
    'no error event': () => !text.includes('"error"'),
  });
}
