// Steady non-streaming load: a constant arrival rate of chat completions.
// Fails when more than FAIL_RATE of requests fail (non-2xx or transport
// error) or when p95/p99 latency exceed P95_MS/P99_MS.
//
//   k6 run loadtest/k6/steady.js                                  # against `sluice demo`
//   BASE_URL=https://gw.example RATE=500 DURATION=5m k6 run loadtest/k6/steady.js

import http from 'k6/http';
import { check } from 'k6';
import { CHAT_URL, headers, chatBody, num, str, preflight, arrival, SUMMARY_STATS } from './lib.js';

const RATE = num('RATE', 200);

export const options = {
  scenarios: arrival('steady', RATE),
  thresholds: {
    http_req_failed: [`rate<${num('FAIL_RATE', 0.001)}`],
    'http_req_duration{name:chat}': [`p(95)<${num('P95_MS', 250)}`, `p(99)<${num('P99_MS', 500)}`],
    checks: ['rate>0.999'],
    // The executor could not keep the rate: the gateway (or k6) is saturated.
    dropped_iterations: [`count<${num('MAX_DROPPED', Math.max(1, RATE))}`],
  },
  summaryTrendStats: SUMMARY_STATS,
};

export function setup() {
  return preflight();
}

const prompts = [
  'Summarise the quarterly report in three bullet points.',
  'Write a haiku about load balancers.',
  'Explain TCP TIME_WAIT to a new SRE.',
  'Translate "good morning" into Dutch, German and French.',
];

export default function () {
  const prompt = `${prompts[__ITER % prompts.length]} (${__VU}-${__ITER})`;
  const res = http.post(CHAT_URL, chatBody(prompt), { headers, tags: { name: 'chat' } });
  check(res, {
    'status 200': (r) => r.status === 200,
    'has a choice': (r) => r.status === 200 && (r.json('choices') || []).length > 0,
  });
}
