// PII-heavy mix: prompts full of e-mail addresses, IBANs (valid mod-97),
// card numbers (valid Luhn), phone numbers, next to clean ones. Measures
// what the request guard costs under load and that the policy holds.
//
//   k6 run loadtest/k6/pii-heavy.js                         # against `sluice demo` (no guard: all 200)
//   ACCEPT_STATUS=200,400 BASE_URL=https://gw.example k6 run loadtest/k6/pii-heavy.js
//
//   PII_SHARE      share of requests carrying PII               default 0.8
//   ACCEPT_STATUS  statuses that count as success (a `block` policy
//                  answers PII prompts with 400)                  default 200
//   ECHO_CHECK=1   only against a model server in echo mode (e.g. sluice's
//                  mock: it returns what it was sent; the header
//                  x-mock-mode: echo is sent): fail a request whose echo
//                  still contains a raw e-mail or IBAN, i.e. check that a
//                  mask/pseudonymize policy really changed what the model saw

import http from 'k6/http';
import { check } from 'k6';
import { Rate, Counter } from 'k6/metrics';
import { CHAT_URL, headers, chatBody, num, str, preflight, shown, arrival, SUMMARY_STATS } from './lib.js';

const leaked = new Rate('pii_leaked');
const statuses = new Counter('pii_statuses');

const RATE = num('RATE', 200);
const PII_SHARE = num('PII_SHARE', 0.8);
const ECHO_CHECK = str('ECHO_CHECK', '0') === '1';
const ACCEPT = str('ACCEPT_STATUS', '200')
  .split(',')
  .map((s) => Number(s.trim()));

http.setResponseCallback(http.expectedStatuses(...ACCEPT));

const thresholds = {
  http_req_failed: [`rate<${num('FAIL_RATE', 0.001)}`],
  'http_req_duration{kind:pii}': [`p(95)<${num('P95_MS', 250)}`, `p(99)<${num('P99_MS', 500)}`],
  'http_req_duration{kind:clean}': [`p(95)<${num('P95_MS', 250)}`, `p(99)<${num('P99_MS', 500)}`],
  checks: ['rate>0.999'],
};
if (ECHO_CHECK) thresholds.pii_leaked = ['rate==0'];
// Show the answers by status in the summary (400/403: blocked by policy).
Object.assign(thresholds, shown('pii_statuses', 'status', str('STATUSES', '200,400,403,422')));

export const options = {
  scenarios: arrival('pii', RATE),
  thresholds,
  summaryTrendStats: SUMMARY_STATS,
};

export function setup() {
  return preflight();
}

const IBANS = ['NL91ABNA0417164300', 'DE89370400440532013000', 'GB82WEST12345698765432', 'FR1420041010050500013M02606'];
const CARDS = ['4111 1111 1111 1111', '5500 0000 0000 0004', '3400 0000 0000 009'];
const PHONES = ['+31 20 123 4567', '+49 30 1234567', '(555) 010-9999'];

function piiPrompt(i) {
  const email = `jane.doe${i % 97}@example.com`;
  const iban = IBANS[i % IBANS.length];
  const card = CARDS[i % CARDS.length];
  const phone = PHONES[i % PHONES.length];
  return {
    text:
      `Draft a reply to ${email} (phone ${phone}) confirming the refund to IBAN ${iban}. ` +
      `The customer paid with card ${card}. Ticket ${i}; cc billing-${i % 13}@example.org.`,
    raw: [email, iban],
  };
}

export default function () {
  const pii = Math.random() < PII_SHARE;
  const kind = pii ? 'pii' : 'clean';
  const p = pii ? piiPrompt(__ITER) : { text: `Summarise ticket ${__ITER} without personal data.`, raw: [] };
  const h = ECHO_CHECK ? Object.assign({ 'x-mock-mode': 'echo' }, headers) : headers;
  const res = http.post(CHAT_URL, chatBody(p.text), { headers: h, tags: { name: 'chat', kind } });
  statuses.add(1, { status: String(res.status), kind });
  if (ECHO_CHECK && pii && res.status === 200) {
    const body = res.body || '';
    leaked.add(p.raw.some((s) => body.includes(s)));
  }
  check(res, { 'accepted status': (r) => ACCEPT.includes(r.status) });
}
