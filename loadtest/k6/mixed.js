// mixed: GETs, lists, creates and patches by weight, open loop, as the Go
// driver's mixed scenario.
//   TETHER_URL=https://GATEWAY TETHER_TOKENS=t1,t2 RATE=200 DURATION=60s k6 run loadtest/k6/mixed.js
import { duration, mixWeights, mixedRequest, rate, thresholds } from './lib.js';

export const options = {
  scenarios: {
    mixed: { executor: 'constant-arrival-rate', rate: rate, timeUnit: '1s', duration: duration, preAllocatedVUs: 100, maxVUs: 5000 },
  },
  thresholds: thresholds,
};

// Weights of each kind of request, as driver.Mixed.
export const mix = mixWeights;

export default function () {
  mixedRequest();
}
