// watches: WATCHES watches held open for DURATION, spread over the
// clusters and, in turn, the users, as the Go driver's watches scenario.
// k6 reads a response whole, so it checks that each watch opens and lasts;
// the events' lag needs a client that reads them as they come (make
// loadtest SCENARIO=watches).
//   TETHER_URL=https://GATEWAY TETHER_TOKENS=t1,...,t64 WATCHES=1000 DURATION=60s k6 run loadtest/k6/watches.js
import { duration, holdWatch, seconds, thresholds } from './lib.js';

const watches = parseInt(__ENV.WATCHES || '1000', 10);

export const options = {
  scenarios: {
    watches: { executor: 'per-vu-iterations', vus: watches, iterations: 1, maxDuration: seconds(duration) + 60 + 's' },
  },
  thresholds: thresholds,
};

export default function () {
  holdWatch(__VU - 1);
}
