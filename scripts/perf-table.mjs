// The README's performance table, from the passes of one `scripts/bench-table.sh` run:
//   node scripts/perf-table.mjs PEERS.jsonl COMPARE_DIR MACHINE VERSION
// PEERS.jsonl: the JSON lines of scripts/bench-peers.sh (the Node stack and agentq on each
// backend); COMPARE_DIR: the logs of scripts/bench-compare.sh (BullMQ's drain and
// benches/load.rs on each backend). Prints markdown: medians of the passes, ranges, and
// each ratio beside the target for it.
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';

const [peersFile, compareDir, machine, version] = process.argv.slice(2);
if (!version) {
  console.error('usage: node scripts/perf-table.mjs PEERS.jsonl COMPARE_DIR MACHINE VERSION');
  process.exit(2);
}

const jsonLines = (text) =>
  text.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l));
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
/** Median, min and max of `values`; fails on none (a pass that did not report). */
const stat = (values, what) => {
  if (!values.length) throw new Error(`no figure for ${what}`);
  return { med: median(values), min: Math.min(...values), max: Math.max(...values), n: values.length };
};
const num = (x) =>
  Math.abs(x) >= 100 ? Math.round(x).toLocaleString('en-US') : String(Math.round(x * 10) / 10);
const ranged = (s) => (s.n > 1 ? `${num(s.med)} (${num(s.min)}–${num(s.max)})` : num(s.med));
const ratio = (a, b) => `${(a / b).toFixed(2)}×`;

// --- the Node stack (bench-peers.sh) ---
const peers = jsonLines(readFileSync(peersFile, 'utf8'));
for (const r of peers) {
  const sum = (re) => Object.keys(r).filter((k) => re.test(k)).reduce((a, k) => a + r[k], 0);
  r.rss_total_mib = sum(/^rss_.*_mib$/);
  r.cpu_total_s = sum(/^cpu_.*_s$/);
}
const peerStat = (target, key) =>
  stat(
    peers.filter((r) => r.target === target).map((r) => r[key]).filter(Number.isFinite),
    `${target} ${key}`,
  );

// --- BullMQ's bare drain and benches/load.rs (bench-compare.sh) ---
const files = readdirSync(compareDir);
const bullmq = (concurrency) => {
  const re = new RegExp(`^  1 worker proc x concurrency ${concurrency}:.*= (\\d+) jobs/s`, 'm');
  const values = files
    .filter((f) => /^bullmq-\d+\.log$/.test(f))
    .map((f) => readFileSync(join(compareDir, f), 'utf8').match(re))
    .filter(Boolean)
    .map((m) => Number(m[1]));
  return stat(values, `BullMQ at concurrency ${concurrency}`);
};
const load = (mode, key) => {
  const values = files
    .filter((f) => f.startsWith(`${mode}-`) && f.endsWith('.jsonl'))
    .flatMap((f) => jsonLines(readFileSync(join(compareDir, f), 'utf8')))
    .map((r) => r[key])
    .filter(Number.isFinite);
  return stat(values, `${mode} ${key}`);
};

const columns = [
  { name: 'SQLite', peer: 'agentq-sqlite', load: 'sqlite16', load64: null, stack: 5, bare: 1.0 },
  { name: 'PostgreSQL', peer: 'agentq-pg', load: 'pg16', load64: 'pg64', stack: 4, bare: null },
  { name: 'PostgreSQL + Redis', peer: 'agentq-pgredis', load: 'redispg16', load64: 'redispg64', stack: 3, bare: 0.5 },
];
const row = (label, cell) => `| ${label} | ${columns.map(cell).join(' | ')} |`;
const passes = (target) => peers.filter((r) => r.target === target).length;
const b16 = bullmq(16);
const b64 = bullmq(64);

const out = [];
out.push(
  `Written by \`scripts/bench-table.sh\` on ${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC,`,
  `${machine}, agentq ${version}. Medians of ${passes('peer')} passes (range), each pass alternating the`,
  'peer and every agentq backend; ratios are agentq over the peer, targets (issue 17) in brackets.',
  '',
);
const peerE2e = peerStat('peer', 'e2e_runs_per_s');
out.push(
  '| | agentq SQLite | agentq PostgreSQL | agentq PostgreSQL + Redis |',
  '| --- | --- | --- | --- |',
  `| **Node stack** (\`bench-peers.sh\`): end to end, peer ${ranged(peerE2e)} runs/s | | | |`,
  row('end to end, runs/s', (c) => {
    const s = peerStat(c.peer, 'e2e_runs_per_s');
    return `${ranged(s)}: **${ratio(s.med, peerE2e.med)}** [${c.stack}×]`;
  }),
);
const peerPost = peerStat('peer', 'post_phase_per_s');
out.push(
  row(`POST phase, runs/s (peer ${num(peerPost.med)})`, (c) => {
    const s = peerStat(c.peer, 'post_phase_per_s');
    return `${num(s.med)}: ${ratio(s.med, peerPost.med)}`;
  }),
);
const peerIdle = peerStat('peer', 'idle_p50_ms');
out.push(
  row(`idle POST → \`succeeded\` p50, ms (peer ${num(peerIdle.med)})`, (c) => num(peerStat(c.peer, 'idle_p50_ms').med)),
);
const peerRss = peerStat('peer', 'rss_total_mib');
out.push(
  row(`peak RSS of the service, MiB (peer ${num(peerRss.med)})`, (c) => {
    const s = peerStat(c.peer, 'rss_total_mib');
    return `${num(s.med)}: ${ratio(s.med, peerRss.med)}`;
  }),
);
const peerCpu = peerStat('peer', 'cpu_total_s');
out.push(
  row(`CPU of the service over a pass, s (peer ${num(peerCpu.med)})`, (c) => {
    const s = peerStat(c.peer, 'cpu_total_s');
    return `${num(s.med)}: ${ratio(s.med, peerCpu.med)}`;
  }),
);
out.push(
  `| **BullMQ's bare drain** (\`bench-compare.sh\`): ${num(b16.med)} jobs/s at concurrency 16, ${num(b64.med)} at 64 | | | |`,
  row('end to end, concurrency 16, runs/s', (c) => {
    const s = load(c.load, 'e2e_runs_per_s');
    const target = c.bare ? ` [${c.bare.toFixed(1)}×]` : '';
    return `${ranged(s)}: **${ratio(s.med, b16.med)}**${target}`;
  }),
  row('end to end, concurrency 64, runs/s', (c) => {
    if (!c.load64) return '';
    const s = load(c.load64, 'e2e_runs_per_s');
    return `${ranged(s)}: ${ratio(s.med, b64.med)}`;
  }),
  row('POST phase alone, runs/s', (c) => num(load(c.load, 'post_runs_per_s').med)),
  row('POST p99 at 1,000 runs/s (p50), ms', (c) =>
    `${num(load(c.load, 'post_p99_ms').med)} (${num(load(c.load, 'post_p50_ms').med)})`),
  row('idle POST → `succeeded` p50 (p99), ms', (c) => {
    const text = `${num(load(c.load, 'idle_p50_ms').med)} (${num(load(c.load, 'idle_p99_ms').med)})`;
    return c.load === 'redispg16' ? `${text} [2 ms]` : text;
  }),
  row('live event, commit → SSE client p50 / p99, ms', (c) =>
    `${num(load(c.load, 'sse_p50_ms').med)} / ${num(load(c.load, 'sse_p99_ms').med)}`),
  row('peak RSS, MiB', (c) => num(load(c.load, 'peak_rss_mib').med)),
);
console.log(out.join('\n'));
