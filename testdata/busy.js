// A Node.js workload for perf-map tests: `node --perf-basic-prof busy.js SECONDS`
// makes V8 write /tmp/perf-PID.map, which names the JIT-compiled busyLoop.
function busyLoop(n) {
  let s = 0;
  for (let i = 0; i < n; i++) {
    s += Math.sqrt(i) * Math.sin(i);
  }
  return s;
}

const end = Date.now() + 1000 * Number(process.argv[2] || 3);
let total = 0;
while (Date.now() < end) {
  total += busyLoop(2e6);
}
console.log(`total ${total}`);
