// steady: small GETs at a set rate, spread at random over every cluster,
// from many users; open loop (constant-arrival-rate), as the Go driver's
// steady scenario.
//   TETHER_URL=https://GATEWAY TETHER_TOKENS=t1,t2 RATE=200 DURATION=60s k6 run loadtest/k6/steady.js
import http from 'k6/http';
import { check } from 'k6';
import { configmaps, duration, objectName, params, rate, thresholds } from './lib.js';

export const options = {
  scenarios: {
    steady: { executor: 'constant-arrival-rate', rate: rate, timeUnit: '1s', duration: duration, preAllocatedVUs: 100, maxVUs: 5000 },
  },
  thresholds: thresholds,
};

export default function () {
  const res = http.get(configmaps() + '/' + objectName(), params());
  check(res, { 'GET 200': (r) => r.status === 200 });
}
