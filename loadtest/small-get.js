// k6 load of small GETs through the gateway, for capacity planning.
//
//   TETHER_URL=https://127.0.0.1:PORT/clusters/dev TETHER_TOKEN=... \
//   k6 run --insecure-skip-tls-verify loadtest/small-get.js
//
// (make run prints the URL; the token is in .state/tokens.csv.) Bounded:
// VUS virtual users for DURATION, loopback only.
import http from 'k6/http';
import { check } from 'k6';

export const options = {
  vus: Number(__ENV.VUS || 64),
  duration: __ENV.DURATION || '30s',
  thresholds: {
    checks: ['rate>0.999'],
  },
};

const base = __ENV.TETHER_URL;
const params = { headers: { Authorization: `Bearer ${__ENV.TETHER_TOKEN}`, Accept: 'application/json' } };

export default function () {
  const res = http.get(`${base}/api/v1/namespaces/default`, params);
  check(res, { 'status 200': (r) => r.status === 200 });
}
