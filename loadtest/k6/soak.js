// soak: the mixed load with WATCHES watches held open, for DURATION (30
// minutes unless given), as the Go driver's soak scenario. Watch the
// gateway's, routers' and subscribers' memory and goroutines meanwhile:
// they should stay flat (make loadtest SCENARIO=soak plots them).
//   TETHER_URL=https://GATEWAY TETHER_TOKENS=t1,...,t64 RATE=200 WATCHES=1000 DURATION=30m k6 run loadtest/k6/soak.js
import { holdWatch, mixedRequest, rate, seconds, thresholds } from './lib.js';

const soakFor = __ENV.DURATION || '30m';
const watches = parseInt(__ENV.WATCHES || '1000', 10);

export const options = {
  scenarios: {
    mixed: { executor: 'constant-arrival-rate', exec: 'mixed', rate: rate, timeUnit: '1s', duration: soakFor, preAllocatedVUs: 100, maxVUs: 5000 },
    watches: { executor: 'per-vu-iterations', exec: 'watch', vus: watches, iterations: 1, maxDuration: seconds(soakFor) + 60 + 's' },
  },
  thresholds: thresholds,
};

export function mixed() {
  mixedRequest();
}

// watch holds one watch for the whole soak; __VU counts across both
// scenarios, which only shifts where the watches start.
export function watch() {
  holdWatch(__VU - 1);
}

export default function () {
  mixedRequest();
}
