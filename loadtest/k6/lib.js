// Shared settings of the k6 scripts in this folder. Every script reads:
//
//   BASE_URL   gateway address             default http://127.0.0.1:8080 (`sluice demo`)
//   API_KEY    a key of the team under test default sk-sluice-demo (the demo's key)
//   MODEL      model name to request        default llama-3.1-8b (the demo's model)
//   VUS        virtual users (connections)  default per script
//   DURATION   length of the run            default 30s
//   RATE       requests/s (scripts with a constant arrival rate), default per script
//   P95_MS, P99_MS, FAIL_RATE   thresholds that fail the run, defaults per script
//
// A run whose thresholds fail exits with code 99 (k6's convention), so CI
// and `make` fail with it.

import http from 'k6/http';

export const BASE_URL = (__ENV.BASE_URL || 'http://127.0.0.1:8080').replace(/\/+$/, '');
export const API_KEY = __ENV.API_KEY || 'sk-sluice-demo';
export const MODEL = __ENV.MODEL || 'llama-3.1-8b';
export const CHAT_URL = `${BASE_URL}/v1/chat/completions`;

export function num(name, fallback) {
  const v = __ENV[name];
  if (v === undefined || v === '') return fallback;
  const n = Number(v);
  if (Number.isNaN(n)) throw new Error(`${name}=${v} is not a number`);
  return n;
}

export function str(name, fallback) {
  const v = __ENV[name];
  return v === undefined || v === '' ? fallback : v;
}

export const headers = {
  'content-type': 'application/json',
  authorization: `Bearer ${API_KEY}`,
};

// One chat completion request body.
export function chatBody(content, extra) {
  return JSON.stringify(
    Object.assign(
      { model: MODEL, max_tokens: num('MAX_TOKENS', 64), messages: [{ role: 'user', content }] },
      extra || {},
    ),
  );
}

// Threshold set: error rate and latency percentiles of the given metric.
export function latencyThresholds(metric, p95, p99) {
  return { [metric]: [`p(95)<${p95}`, `p(99)<${p99}`] };
}

// Fails the run at once (before any load) when the gateway is unreachable
// or the key is refused, with a message saying which.
export function preflight() {
  const res = http.get(`${BASE_URL}/v1/models`, { headers, tags: { name: 'preflight' } });
  if (res.status === 0) {
    throw new Error(`cannot reach ${BASE_URL}: ${res.error}`);
  }
  if (res.status === 401) {
    throw new Error(`${BASE_URL} refused API_KEY (401): set API_KEY to a key of the team under test`);
  }
  if (res.status !== 200) {
    throw new Error(`GET ${BASE_URL}/v1/models answered ${res.status}: ${res.body}`);
  }
  let models = [];
  try {
    models = (res.json('data') || []).map((m) => m.id);
  } catch (e) {
    // not OpenAI's list format: leave the check to the requests
  }
  if (models.length && !models.includes(MODEL)) {
    throw new Error(`MODEL=${MODEL} is not among this key's models: ${models.join(', ')}`);
  }
  return { models };
}

// The `x-sluice-*` headers of a response (k6 canonicalises header names).
export function header(res, name) {
  const want = name.toLowerCase();
  for (const k in res.headers) {
    if (k.toLowerCase() === want) return res.headers[k];
  }
  return undefined;
}

// Always-true thresholds on the tagged sub-metrics `metric{tag:value}`
// for each value of a comma-separated list: k6 prints every metric that
// has a threshold in its end-of-run summary, so the counts per value show.
export function shown(metric, tag, values) {
  const out = {};
  for (const v of values.split(',').map((s) => s.trim()).filter(Boolean)) {
    out[`${metric}{${tag}:${v}}`] = ['count>=0'];
  }
  return out;
}

/** The percentiles every script's summary shows. */
export const SUMMARY_STATS = ['avg', 'min', 'med', 'p(90)', 'p(95)', 'p(99)', 'max'];

/**
 * One scenario sending `rate` requests per second for DURATION, with VUS
 * pre-allocated and at most MAX_VUS.
 */
export function arrival(name, rate) {
  return {
    [name]: {
      executor: 'constant-arrival-rate',
      rate,
      timeUnit: '1s',
      duration: str('DURATION', '30s'),
      preAllocatedVUs: num('VUS', 32),
      maxVUs: num('MAX_VUS', 256),
    },
  };
}
