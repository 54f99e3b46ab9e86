// Failover: steady load meant to run while one model server is killed
// (or firewalled, or restarted). With retries and a second target, only
// requests in flight on the killed server at that instant may fail; the
// run fails when more than FAIL_RATE of all requests failed or when the
// latency percentiles exceed P95_MS/P99_MS.
//
// Self-contained on one machine (two mock model servers, a gateway in
// front with retries, one server SIGKILLed at KILL_AT seconds):
//
//   loadtest/k6/failover-local.sh
//
// The summary lists answers by status (STATUSES, default
// 200,429,500,502,503,504) and, with UPSTREAMS=a,b (the gateway's
// upstream names), by `x-sluice-upstream`: traffic moving off the killed
// server shows there.
//
// Against a real deployment: start this, then kill a model server (or
// `systemctl stop vllm` on one GPU node) during the run:
//
//   BASE_URL=https://gw.example MODEL=llama DURATION=2m k6 run loadtest/k6/failover.js

import http from 'k6/http';
import { check } from 'k6';
import { Counter } from 'k6/metrics';
import { CHAT_URL, headers, chatBody, num, str, preflight, header, shown, arrival, SUMMARY_STATS } from './lib.js';

const byUpstream = new Counter('answers_by_upstream');
const byStatus = new Counter('answers_by_status');

const RATE = num('RATE', 200);

export const options = {
  scenarios: arrival('failover', RATE),
  thresholds: Object.assign(
    {
      http_req_failed: [`rate<${num('FAIL_RATE', 0.01)}`],
      'http_req_duration{name:chat}': [`p(95)<${num('P95_MS', 500)}`, `p(99)<${num('P99_MS', 2000)}`],
    },
    shown('answers_by_status', 'status', str('STATUSES', '200,429,500,502,503,504')),
    shown('answers_by_upstream', 'upstream', str('UPSTREAMS', '')),
  ),
  summaryTrendStats: SUMMARY_STATS,
};

export function setup() {
  return preflight();
}

export default function () {
  const res = http.post(CHAT_URL, chatBody(`Failover probe ${__VU}-${__ITER}`), {
    headers,
    tags: { name: 'chat' },
  });
  byStatus.add(1, { status: String(res.status) });
  byUpstream.add(1, { upstream: header(res, 'x-sluice-upstream') || 'none' });
  check(res, { 'status 200': (r) => r.status === 200 });
}
