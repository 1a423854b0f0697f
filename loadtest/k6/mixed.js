// mixed: GETs, lists, creates and patches by weight, open loop, as the Go
// driver's mixed scenario.
//   TETHER_URL=https://GATEWAY TETHER_TOKENS=t1,t2 RATE=200 DURATION=60s k6 run loadtest/k6/mixed.js
import http from 'k6/http';
import { check } from 'k6';
import { configmaps, duration, objectName, params, rate, thresholds } from './lib.js';

export const options = {
  scenarios: {
    mixed: { executor: 'constant-arrival-rate', rate: rate, timeUnit: '1s', duration: duration, preAllocatedVUs: 100, maxVUs: 5000 },
  },
  thresholds: thresholds,
};

// Weights of each kind of request, as driver.Mixed.
export const mix = { get: 60, list: 25, create: 5, patch: 10 };

function kind() {
  const total = mix.get + mix.list + mix.create + mix.patch;
  let n = Math.random() * total;
  for (const k of ['get', 'list', 'create', 'patch']) {
    if (n < mix[k]) {
      return k;
    }
    n -= mix[k];
  }
  return 'get';
}

export default function () {
  const base = configmaps();
  let res;
  switch (kind()) {
    case 'list':
      res = http.get(base + '?limit=10', params());
      check(res, { 'list 200': (r) => r.status === 200 });
      break;
    case 'create': {
      const name = 'load-k6-' + Date.now() + '-' + Math.floor(Math.random() * 1e9);
      const body = JSON.stringify({ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: name }, data: { k: 'v' } });
      res = http.post(base, body, params({ 'Content-Type': 'application/json' }));
      check(res, { 'create 201': (r) => r.status === 201 });
      break;
    }
    case 'patch':
      res = http.patch(base + '/' + objectName(), JSON.stringify({ metadata: { annotations: { load: '1' } } }),
        params({ 'Content-Type': 'application/merge-patch+json' }));
      check(res, { 'patch 200': (r) => r.status === 200 });
      break;
    default:
      res = http.get(base + '/' + objectName(), params());
      check(res, { 'GET 200': (r) => r.status === 200 });
  }
}
