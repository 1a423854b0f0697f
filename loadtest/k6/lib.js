import http from 'k6/http';
import { check } from 'k6';

// Shared by the scenarios: where the requests go and who sends them, as
// Tether's Go load driver (loadtest/driver) does. Environment:
//   TETHER_URL     the gateway (https://GATEWAY), or several, comma-separated
//   TETHER_TOKENS  users' bearer tokens, comma-separated (many users: a
//                  gateway limits what one user may hold at once)
//   CLUSTER_PREFIX, CLUSTERS  clusters PREFIX-00000 .. (agentsim --prefix, --agents)
//   NAMESPACE, OBJECTS        where the ConfigMaps are, and how many (agentsim --objects)
export const gateways = (__ENV.TETHER_URL || 'https://127.0.0.1:8443').split(',').map((u) => u.replace(/\/$/, ''));
export const tokens = (__ENV.TETHER_TOKENS || '').split(',').filter((t) => t !== '');
export const clusterPrefix = __ENV.CLUSTER_PREFIX || 'sim';
export const clusterCount = parseInt(__ENV.CLUSTERS || '1000', 10);
export const namespace = __ENV.NAMESPACE || 'load';
export const objects = parseInt(__ENV.OBJECTS || '10', 10);
export const rate = parseInt(__ENV.RATE || '200', 10);
export const duration = __ENV.DURATION || '60s';

// The Go driver's thresholds: no request may fail.
export const thresholds = { http_req_failed: ['rate<0.001'], checks: ['rate>0.999'] };

export function pick(a) {
  return a[Math.floor(Math.random() * a.length)];
}

function five(i) {
  return String(i).padStart(5, '0');
}

export function cluster() {
  return clusterPrefix + '-' + five(Math.floor(Math.random() * clusterCount));
}

export function objectName() {
  return 'cm-' + five(Math.floor(Math.random() * objects));
}

// configmaps is a random cluster's ConfigMaps, through a random gateway.
export function configmaps() {
  return pick(gateways) + '/clusters/' + cluster() + '/api/v1/namespaces/' + namespace + '/configmaps';
}

export function params(extra) {
  const headers = Object.assign({ Authorization: 'Bearer ' + pick(tokens) }, extra || {});
  return { headers: headers };
}

export function seconds(d) {
  const m = /^(\d+)(s|m)$/.exec(d);
  if (!m) {
    throw new Error('DURATION ' + d + ': want 90s or 5m');
  }
  return parseInt(m[1], 10) * (m[2] === 'm' ? 60 : 1);
}

// Weights of each kind of request, as driver.Mixed.
export const mixWeights = { get: 60, list: 25, create: 5, patch: 10 };

function kind() {
  const total = mixWeights.get + mixWeights.list + mixWeights.create + mixWeights.patch;
  let n = Math.random() * total;
  for (const k of ['get', 'list', 'create', 'patch']) {
    if (n < mixWeights[k]) {
      return k;
    }
    n -= mixWeights[k];
  }
  return 'get';
}

// mixedRequest is one request of the mixed load.
export function mixedRequest() {
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

// holdWatch holds the i-th watch for DURATION.
export function holdWatch(i) {
  const cluster = clusterPrefix + '-' + String(i % clusterCount).padStart(5, '0');
  const url = gateways[i % gateways.length] + '/clusters/' + cluster + '/api/v1/namespaces/' + namespace +
    '/configmaps?watch=true&timeoutSeconds=' + seconds(duration);
  const res = http.get(url, { headers: { Authorization: 'Bearer ' + tokens[i % tokens.length] }, timeout: seconds(duration) + 30 + 's' });
  check(res, { 'watch 200': (r) => r.status === 200 });
}
