// spike: steady GETs whose rate jumps tenfold for 30 s (or a third of the
// run, if shorter) from a third of the way in, as the Go driver's spike
// scenario; open loop (ramping-arrival-rate with instant steps).
//   TETHER_URL=https://GATEWAY TETHER_TOKENS=t1,t2 RATE=100 DURATION=120s k6 run loadtest/k6/spike.js
import http from 'k6/http';
import { check } from 'k6';
import { configmaps, duration, objectName, params, rate, seconds, thresholds } from './lib.js';

export const factor = 10;
const total = seconds(duration);
const at = Math.floor(total / 3);
const lasting = Math.min(30, Math.floor(total / 3));

export const options = {
  scenarios: {
    spike: {
      executor: 'ramping-arrival-rate',
      startRate: rate,
      timeUnit: '1s',
      preAllocatedVUs: 200,
      maxVUs: 10000,
      stages: [
        { target: rate, duration: at + 's' },
        { target: rate * factor, duration: '0s' },
        { target: rate * factor, duration: lasting + 's' },
        { target: rate, duration: '0s' },
        { target: rate, duration: total - at - lasting + 's' },
      ],
    },
  },
  thresholds: thresholds,
};

export default function () {
  const res = http.get(configmaps() + '/' + objectName(), params());
  check(res, { 'GET 200': (r) => r.status === 200 });
}
