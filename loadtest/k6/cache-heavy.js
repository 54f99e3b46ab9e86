// Cache-heavy mix: most requests repeat one of a few identical prompts
// (an FAQ bot, a retried agent step), the rest are unique. With
// `[cache]` on, repeats should be answered from the cache: the response
// header `x-sluice-cache` says hit | semantic-hit | miss | bypass.
// Latency is reported separately for repeated and unique prompts
// (`http_req_duration{kind:repeat}` / `{kind:unique}`).
//
//   k6 run loadtest/k6/cache-heavy.js                          # against `sluice demo` (it caches: repeats hit)
//   MIN_HIT_RATE=0.8 BASE_URL=https://gw.example k6 run loadtest/k6/cache-heavy.js
//
//   REPEAT_SHARE  share of requests that repeat a prompt   default 0.9
//   PROMPTS       how many distinct repeated prompts        default 10
//   MIN_HIT_RATE  fail the run if fewer repeated requests were cache hits (default: not checked)
//   STREAM=1      ask for streamed answers (a hit is answered as SSE too)

import http from 'k6/http';
import { check } from 'k6';
import { Rate, Counter } from 'k6/metrics';
import { CHAT_URL, headers, chatBody, num, str, preflight, header, shown, arrival, SUMMARY_STATS } from './lib.js';

const hit = new Rate('cache_hit');
const results = new Counter('cache_results');

const RATE = num('RATE', 200);
const REPEAT_SHARE = num('REPEAT_SHARE', 0.9);
const PROMPTS = num('PROMPTS', 10);
const STREAM = str('STREAM', '0') === '1';

const thresholds = {
  http_req_failed: [`rate<${num('FAIL_RATE', 0.001)}`],
  'http_req_duration{kind:repeat}': [`p(95)<${num('P95_MS', 250)}`, `p(99)<${num('P99_MS', 500)}`],
  'http_req_duration{kind:unique}': [`p(95)<${num('P95_MS', 250)}`, `p(99)<${num('P99_MS', 500)}`],
  checks: ['rate>0.999'],
};
Object.assign(thresholds, shown('cache_results', 'result', 'hit,semantic-hit,miss,bypass,none'));
if (__ENV.MIN_HIT_RATE) {
  thresholds['cache_hit{kind:repeat}'] = [`rate>=${num('MIN_HIT_RATE', 0)}`];
}

export const options = {
  scenarios: arrival('cache', RATE),
  thresholds,
  summaryTrendStats: SUMMARY_STATS,
};

export function setup() {
  return preflight();
}

export default function () {
  const repeat = Math.random() < REPEAT_SHARE;
  const kind = repeat ? 'repeat' : 'unique';
  const prompt = repeat
    ? `What are the opening hours of support desk ${Math.floor(Math.random() * PROMPTS)}?`
    : `Unique question ${__VU}-${__ITER}-${Math.random()}: what is ${__ITER} squared?`;
  // Identical bytes for identical prompts: the exact cache keys on the
  // canonical request, so keep every other field fixed too.
  const body = chatBody(prompt, STREAM ? { stream: true, temperature: 0 } : { temperature: 0 });
  const res = http.post(CHAT_URL, body, { headers, tags: { name: 'chat', kind } });
  const verdict = header(res, 'x-sluice-cache') || 'none';
  results.add(1, { result: verdict });
  hit.add(verdict === 'hit' || verdict === 'semantic-hit', { kind });
  check(res, { 'status 200': (r) => r.status === 200 });
}
