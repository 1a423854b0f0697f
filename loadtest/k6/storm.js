// storm: the steady load while a subscriber holding half the fleet dies,
// as the Go driver's storm scenario (make loadtest SCENARIO=storm). k6
// cannot kill a pod: start this, then delete one subscriber pod with
// --grace-period=0 a third of the way in, and watch the agents come back
// (tetherctl cluster list). No request may hang: each gets its answer, or
// a 503 that says when to come back.
//   TETHER_URL=https://GATEWAY TETHER_TOKENS=t1,t2 RATE=200 DURATION=90s k6 run loadtest/k6/storm.js
import http from 'k6/http';
import { check } from 'k6';
import { configmaps, duration, objectName, params, rate, thresholds } from './lib.js';

export const options = {
  scenarios: {
    storm: { executor: 'constant-arrival-rate', rate: rate, timeUnit: '1s', duration: duration, preAllocatedVUs: 100, maxVUs: 5000 },
  },
  thresholds: thresholds,
};

export default function () {
  const res = http.get(configmaps() + '/' + objectName(), Object.assign(params(), { timeout: '30s' }));
  check(res, {
    'GET 200, or 503 with Retry-After': (r) => r.status === 200 || (r.status === 503 && r.headers['Retry-After'] !== undefined),
  });
}
