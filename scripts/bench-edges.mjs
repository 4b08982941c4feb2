// The client side of scripts/bench-edges.sh (run that: it starts the server, raises the
// open-file limit and keeps the log): against one `agentq serve` at BASE, process
// SERVER_PID, it runs the scenarios of SCENARIOS in order and reads what each costs the
// server from /proc: open fds, RSS (VmRSS; VmHWM, reset per scenario through clear_refs,
// for the peak) and CPU in cores (utime + stime over the scenario's window).
//   idle   CONNS connections that send nothing, every tenth half a request head and no
//          blank line, held by child processes of this script (`--hold`) so that no
//          client process runs out of files first; a fresh GET /healthz (5 s timeout)
//          among them; how many the server closed after WINDOW_SECS and after
//          IDLE_WAIT_SECS, and when; the kernel's side of the port (/proc/net/tcp)
//   posts  POSTS concurrent POST /v1/runs of POST_BYTES (an echo input of many short keys,
//          which echo refuses, 422; POST_INPUT=value: under input.value, which it takes),
//          each on its own connection; RSS sampled every 50 ms, and 5 s after the burst
//   sse    SSE runs waiting for the signal `never`, then one event stream each
//          (GET /v1/runs/{id}/events, Accept: text/event-stream) held for WINDOW_SECS
//   BASE=http://127.0.0.1:PORT SERVER_PID=PID node scripts/bench-edges.mjs
// Knobs (env): as scripts/bench-edges.sh, plus SERVER_LOG (the server's log, to count the
// lines it writes during a scenario) and CLK_TCK (100). Node 20, no packages.
import { fork } from 'node:child_process';
import http from 'node:http';
import net from 'node:net';
import { closeSync, openSync, readFileSync, readSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';

const env = process.env;
const int = (name, dflt) => {
  const v = env[name] === undefined || env[name] === '' ? dflt : Number(env[name]);
  if (!Number.isFinite(v) || v < 0) throw new Error(`${name}=${env[name]}: a number`);
  return v;
};
if (!env.BASE || !env.SERVER_PID) {
  console.error('usage: BASE=http://127.0.0.1:PORT SERVER_PID=PID node scripts/bench-edges.mjs');
  process.exit(2);
}
const base = new URL(env.BASE);
const host = base.hostname;
const port = Number(base.port);
const pid = Number(env.SERVER_PID);
const tick = int('CLK_TCK', 100);
const CONNS = int('CONNS', 20000);
const POSTS = int('POSTS', 100);
const POST_BYTES = int('POST_BYTES', 870000);
const POST_INPUT = env.POST_INPUT || 'keys';
if (!['keys', 'value'].includes(POST_INPUT)) throw new Error(`POST_INPUT=${POST_INPUT}: keys or value`);
const SSE = int('SSE', 2000);
const WINDOW_SECS = int('WINDOW_SECS', 10);
const IDLE_WAIT_SECS = int('IDLE_WAIT_SECS', 65);
const OPEN_SECS = int('OPEN_SECS', 60);
const SCENARIOS = (env.SCENARIOS || 'idle,posts,sse').split(',').map((s) => s.trim()).filter(Boolean);

// --- the server, from /proc ---
const alive = () => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};
const fds = () => readdirSync(`/proc/${pid}/fd`).length;
/** VmRSS and VmHWM in MiB. */
const mem = () => {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (key) => Number(status.match(new RegExp(`^${key}:\\s+(\\d+)`, 'm'))?.[1] ?? NaN);
  return { rss: kb('VmRSS') / 1024, hwm: kb('VmHWM') / 1024 };
};
/** Resets VmHWM to the current RSS (Linux 4.0+); false where that is not allowed. */
const resetPeak = () => {
  try {
    writeFileSync(`/proc/${pid}/clear_refs`, '5');
    return true;
  } catch {
    return false;
  }
};
/** CPU seconds (user + system) the server has used. */
const cpuSeconds = () => {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(')').pop().trim().split(/\s+/);
  return (Number(fields[11]) + Number(fields[12])) / tick;
};
/** A CPU meter: stop() answers the cores used since start (CPU seconds per wall second). */
const cpuMeter = () => {
  const c0 = cpuSeconds();
  const t0 = performance.now();
  return {
    stop: () => ({
      cores: (cpuSeconds() - c0) / ((performance.now() - t0) / 1000),
      secs: (performance.now() - t0) / 1000,
    }),
  };
};
// --- the kernel's side of the server's port (IPv4 loopback; null elsewhere) ---
const portHex = `:${port.toString(16).toUpperCase().padStart(4, '0')}`;
const tcpLines = (text) => text.split('\n').slice(1).map((l) => l.trim().split(/\s+/));
/** Connections waiting in the listening socket's accept queue (listening sockets come first). */
const acceptQueue = () => {
  let fd;
  try {
    fd = openSync('/proc/net/tcp', 'r');
    const buf = Buffer.alloc(65536);
    const n = readSync(fd, buf, 0, buf.length, null);
    const line = tcpLines(buf.subarray(0, n).toString('latin1')).find(
      (f) => f[1]?.endsWith(portHex) && f[3] === '0A',
    );
    return line ? parseInt(line[4].split(':')[1], 16) : null;
  } catch {
    return null;
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
};
/** Established TCP connections on the server's port, accepted or still in the accept queue. */
const serverEstablished = () => {
  try {
    return tcpLines(readFileSync('/proc/net/tcp', 'latin1')).filter(
      (f) => f[1]?.endsWith(portHex) && f[3] === '01',
    ).length;
  } catch {
    return null;
  }
};
/** The machine's TcpExt ListenOverflows counter (connections a full accept queue dropped). */
const listenOverflows = () => {
  try {
    const lines = readFileSync('/proc/net/netstat', 'latin1').split('\n').filter((l) => l.startsWith('TcpExt:'));
    const names = lines[0].split(/\s+/);
    return Number(lines[1].split(/\s+/)[names.indexOf('ListenOverflows')]);
  } catch {
    return NaN;
  }
};

/** Lines the server logged since the mark, counted by a short key of each. */
const logMark = () => {
  try {
    return statSync(env.SERVER_LOG).size;
  } catch {
    return 0;
  }
};
const logSince = (mark) => {
  if (!env.SERVER_LOG) return {};
  let text;
  try {
    text = readFileSync(env.SERVER_LOG).subarray(mark).toString('utf8');
  } catch {
    return {};
  }
  const counts = {};
  for (const line of text.split('\n')) {
    // eslint-disable-next-line no-control-regex
    const plain = line.replace(/\x1b\[[0-9;]*m/g, '').trim();
    if (!plain) continue;
    const level = plain.match(/\b(ERROR|WARN|INFO|DEBUG|TRACE)\b/)?.[1] ?? 'LINE';
    if (level === 'INFO' || level === 'DEBUG' || level === 'TRACE') continue;
    // the message without time, level, spans, target, ids and numbers
    const gist = /too many open files|emfile/i.test(plain)
      ? 'too many open files'
      : plain
          .replace(/^.*?\b(ERROR|WARN)\b\s*/, '')
          .replace(/\w+\{[^}]*\}:?\s*/g, '')
          .replace(/^[\w:]+::[\w:]+:\s*/, '')
          .replace(/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/gi, '<id>')
          .replace(/\d+(\.\d+)?/g, 'N')
          .slice(0, 80);
    const key = `${level} ${gist}`;
    counts[key] = (counts[key] ?? 0) + 1;
  }
  return counts;
};

// --- helpers ---
const now = () => performance.now();
const r1 = (x) => (Number.isFinite(x) ? Math.round(x * 10) / 10 : x);
const r3 = (x) => (Number.isFinite(x) ? Math.round(x * 1000) / 1000 : x);
const bump = (counts, key) => {
  counts[key] = (counts[key] ?? 0) + 1;
};
const countsText = (counts) =>
  Object.entries(counts)
    .map(([k, v]) => `${k}×${v}`)
    .join(' ') || 'none';
const median = (xs) => {
  if (!xs.length) return null;
  const s = [...xs].sort((a, b) => a - b);
  return s[s.length >> 1];
};
/** Runs fn(0..n-1), at most `limit` at once. */
const pool = async (n, limit, fn) => {
  let next = 0;
  const worker = async () => {
    while (next < n) await fn(next++);
  };
  await Promise.all(Array.from({ length: Math.min(n, limit) }, worker));
};
/**
 * One request on a connection of its own; answers { status, ms, body? } or { error, ms }.
 * The whole exchange must end within timeoutMs.
 */
const request = ({ method = 'GET', path, headers = {}, body, timeoutMs = 60000, keepBody = false }) =>
  new Promise((resolve) => {
    const t0 = now();
    let done = false;
    const finish = (r) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      resolve({ ...r, ms: now() - t0 });
    };
    const req = http.request({ host, port, method, path, headers, agent: false });
    const timer = setTimeout(() => {
      finish({ error: 'timeout' });
      req.destroy();
    }, timeoutMs);
    req.on('error', (e) => finish({ error: e.code || e.message }));
    req.on('response', (res) => {
      const chunks = [];
      res.on('data', (d) => keepBody && chunks.push(d));
      res.on('end', () =>
        finish({ status: res.statusCode, body: keepBody ? Buffer.concat(chunks).toString('utf8') : undefined }),
      );
      res.on('error', (e) => finish({ error: e.code || e.message }));
    });
    if (body !== undefined) req.end(body);
    else req.end();
  });
const json = async (method, path, value) => {
  const body = value === undefined ? undefined : Buffer.from(JSON.stringify(value));
  const headers = body ? { 'content-type': 'application/json', 'content-length': body.length } : {};
  const r = await request({ method, path, headers, body, keepBody: true });
  if (r.error) throw new Error(`${method} ${path}: ${r.error}`);
  if (r.status >= 300) throw new Error(`${method} ${path}: ${r.status} ${r.body.slice(0, 200)}`);
  return JSON.parse(r.body);
};
const log = (...args) => console.log('  ..', ...args);

// --- the scenarios: each answers { fds, rss, peak, cpu, facts: {…}, text: 'facts in short' } ---

// --- idle: the connections are held by child processes (`--hold`), each within its own
// open-file limit, so CONNS may come near the server's limit (or pass it) ---

const HALF = 'GET /healthz HTTP/1.1\r\nHost: x\r\n';
/** This process's soft limit on open files. */
const ownFdLimit = () => {
  const m = readFileSync('/proc/self/limits', 'utf8').match(/^Max open files\s+(\d+)/m);
  return m ? Number(m[1]) : 1024;
};

/** A holder: opens the connections it is told to, reports on them, closes them. */
function hold() {
  const conns = [];
  const failures = {};
  let notTried = 0;
  const markClosed = (c) => {
    if (!c.connected || c.ours || c.closedAt) return;
    c.closedAt = now();
  };
  const open = (k) =>
    new Promise((resolve) => {
      // a tenth send half a request head, and never its blank line
      const c = { half: k % 10 === 0, connected: false, ours: false, closedAt: 0, got: '' };
      const s = net.connect({ host, port });
      c.s = s;
      const timer = setTimeout(() => {
        if (c.connected) return;
        bump(failures, 'connect timeout');
        s.destroy();
        resolve();
      }, 10000);
      s.once('connect', () => {
        clearTimeout(timer);
        c.connected = true;
        c.at = now();
        if (c.half) s.write(HALF);
        conns.push(c);
        resolve();
      });
      s.on('data', (d) => {
        if (c.got.length < 100) c.got += d.toString('latin1');
      });
      s.once('end', () => markClosed(c));
      s.once('close', () => markClosed(c));
      s.on('error', (e) => {
        if (c.connected) {
          c.error = e.code || e.message;
          return;
        }
        clearTimeout(timer);
        bump(failures, e.code || e.message);
        resolve();
      });
    });
  const report = () => {
    const flavour = (half) => {
      const all = conns.filter((c) => c.half === half);
      const closed = all.filter((c) => c.closedAt);
      return { open: all.length, closed: closed.length, lifetimes: closed.map((c) => (c.closedAt - c.at) / 1000) };
    };
    const replies = {};
    const errors = {};
    for (const c of conns) {
      if (c.got) bump(replies, c.got.split('\r\n')[0].slice(0, 40));
      if (c.error) bump(errors, c.error);
    }
    return { silent: flavour(false), half: flavour(true), replies, errors };
  };
  process.on('disconnect', () => process.exit(0));
  process.on('message', async (m) => {
    if (m.cmd === 'open') {
      // paced by the server's accept queue: connections it is slow to take would overflow
      // it, and a handshake dropped there (SYN cookies) leaves the client a connection the
      // server never had; a server that takes none for 3 s (out of files, say) is no
      // longer waited for
      let queue = 0;
      let queueAt = 0;
      let maxQueue = 0;
      let fullSince = null;
      await pool(m.count, 100, async (i) => {
        for (;;) {
          if (now() - queueAt > 20) {
            queue = acceptQueue() ?? 0;
            queueAt = now();
            maxQueue = Math.max(maxQueue, queue);
            fullSince = queue < 64 ? null : (fullSince ?? now());
          }
          if (queue < 64 || now() - fullSince > 3000 || Date.now() > m.deadline) break;
          await sleep(20);
        }
        if (Date.now() > m.deadline) notTried++;
        else await open(m.from + i);
      });
      process.send({ type: 'opened', opened: conns.length, failures, notTried, maxQueue });
    } else if (m.cmd === 'report') {
      process.send({ type: 'report', ...report() });
    } else if (m.cmd === 'close') {
      for (const c of conns) {
        c.ours = true;
        c.s.destroy();
      }
      process.send({ type: 'closed' });
    }
  });
}

/** Sends `msg` to a holder and answers its next message of type `type`. */
const ask = (child, msg, type) =>
  new Promise((resolve, reject) => {
    const onMessage = (m) => {
      if (m.type !== type) return;
      child.off('message', onMessage);
      child.off('exit', onExit);
      resolve(m);
    };
    const onExit = (code) => reject(new Error(`a holder of idle connections exited (${code})`));
    child.on('message', onMessage);
    child.once('exit', onExit);
    child.send(msg);
  });

async function idle() {
  const perHolder = Math.max(1, ownFdLimit() - 128);
  const nHolders = Math.max(1, Math.ceil(CONNS / perHolder));
  const holders = Array.from({ length: nHolders }, () =>
    fork(fileURLToPath(import.meta.url), ['--hold'], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] }),
  );
  try {
    return await idleWith(holders);
  } finally {
    for (const h of holders) h.kill();
  }
}

async function idleWith(holders) {
  const mark = logMark();
  resetPeak();
  const before = { fds: fds(), ...mem() };
  const overflows0 = listenOverflows();
  const t0 = now();
  const deadline = Date.now() + OPEN_SECS * 1000;
  const share = Math.ceil(CONNS / holders.length);
  const opened = await Promise.all(
    holders.map((h, j) =>
      ask(h, { cmd: 'open', from: j * share, count: Math.max(0, Math.min(share, CONNS - j * share)), deadline }, 'opened'),
    ),
  );
  const openSecs = (now() - t0) / 1000;
  const nOpened = opened.reduce((a, o) => a + o.opened, 0);
  const notTried = opened.reduce((a, o) => a + o.notTried, 0);
  const failures = {};
  for (const o of opened) for (const [k, v] of Object.entries(o.failures)) failures[k] = (failures[k] ?? 0) + v;
  const maxQueue = Math.max(...opened.map((o) => o.maxQueue));
  await sleep(500);
  const established = serverEstablished();
  const overflows = listenOverflows() - overflows0;
  log(
    `idle: ${nOpened} of ${CONNS} open in ${r1(openSecs)} s by ${holders.length} processes; failures: ${countsText(failures)}` +
      `${notTried ? `, not tried ${notTried}` : ''}; on the server's side ${established} established, ` +
      `accept queue ${acceptQueue()}, listen overflows ${overflows}`,
  );

  // the window: a fresh request among them, then what they cost
  const settled = now();
  const cpu = cpuMeter();
  const health = await request({ path: '/healthz', timeoutMs: 5000 });
  await sleep(Math.max(0, WINDOW_SECS * 1000 - (now() - settled)));
  const { cores } = cpu.stop();
  const during = { fds: fds(), ...mem() };
  const queueAtWindow = acceptQueue();
  const merge = (reports) => {
    const flavour = (key) => ({
      open: reports.reduce((a, r) => a + r[key].open, 0),
      closed: reports.reduce((a, r) => a + r[key].closed, 0),
      lifetimes: reports.flatMap((r) => r[key].lifetimes),
    });
    const sum = (key) => {
      const out = {};
      for (const r of reports) for (const [k, v] of Object.entries(r[key])) out[k] = (out[k] ?? 0) + v;
      return out;
    };
    return { silent: flavour('silent'), half: flavour('half'), replies: sum('replies'), errors: sum('errors') };
  };
  const atWindow = merge(await Promise.all(holders.map((h) => ask(h, { cmd: 'report' }, 'report'))));
  log(`idle: after ${WINDOW_SECS} s closed by the server: silent ${atWindow.silent.closed}, half ${atWindow.half.closed}`);
  await sleep(Math.max(0, IDLE_WAIT_SECS * 1000 - (now() - settled)));
  const atWait = merge(await Promise.all(holders.map((h) => ask(h, { cmd: 'report' }, 'report'))));
  const fdsAtWait = fds();
  await Promise.all(holders.map((h) => ask(h, { cmd: 'close' }, 'closed')));
  await sleep(2000);
  const after = { fds: fds(), ...mem() };
  const nSilent = atWait.silent.open;
  const nHalf = atWait.half.open;
  const facts = {
    conns: CONNS,
    opened: nOpened,
    open_failures: failures,
    not_tried: notTried,
    open_secs: r1(openSecs),
    holder_processes: holders.length,
    server_established: established,
    accept_queue_max: maxQueue,
    accept_queue_at_window_end: queueAtWindow,
    listen_overflows: overflows,
    healthz: health.error ?? health.status,
    healthz_ms: r1(health.ms),
    open_silent: nSilent,
    open_half: nHalf,
    closed_after_window: { silent: atWindow.silent.closed, half: atWindow.half.closed },
    closed_after_wait: { silent: atWait.silent.closed, half: atWait.half.closed },
    wait_secs: IDLE_WAIT_SECS,
    median_close_secs: { silent: r1(median(atWait.silent.lifetimes)), half: r1(median(atWait.half.lifetimes)) },
    replies: atWait.replies,
    errors_after_open: atWait.errors,
    fds_before: before.fds,
    rss_before_mib: r1(before.rss),
    fds_at_wait: fdsAtWait,
    fds_after_close: after.fds,
    rss_after_close_mib: r1(after.rss),
    server_log: logSince(mark),
  };
  const healthText = health.error ? health.error : `${health.status} in ${r1(health.ms)} ms`;
  const closeText = (r) => {
    const m = median(r.lifetimes);
    return `${r.closed}/${r.open}${m === null ? '' : ` (median ${r1(m)} s)`}`;
  };
  const text = [
    `open ${nOpened}/${CONNS} in ${r1(openSecs)} s` +
      (Object.keys(failures).length || notTried
        ? ` (failed ${countsText(failures)}${notTried ? `, not tried ${notTried}` : ''})`
        : ''),
    `server side ${established} established, accept queue ${queueAtWindow}` +
      (overflows ? `, ${overflows} listen overflows` : ''),
    `fresh healthz ${healthText}`,
    `closed by server @${WINDOW_SECS}s silent ${atWindow.silent.closed}/${nSilent} half ${atWindow.half.closed}/${nHalf}, ` +
      `@${IDLE_WAIT_SECS}s silent ${closeText(atWait.silent)} half ${closeText(atWait.half)}`,
    Object.keys(atWait.replies).length ? `replies ${countsText(atWait.replies)}` : null,
    `after close fds ${after.fds} RSS ${r1(after.rss)}`,
    Object.keys(facts.server_log).length ? `server log ${countsText(facts.server_log)}` : null,
  ]
    .filter(Boolean)
    .join('; ');
  return { fds: during.fds, rss: during.rss, peak: during.hwm, cpu: cores, facts, text };
}

async function posts() {
  // {"agent":"echo","input":{"k0":0,"k1":1,…,"k10":0,…}} of about POST_BYTES: ~80,000 keys in 870 kB
  // POST_INPUT=value puts the keys under input.value: echo takes that (202) and the run is
  // stored; its schema refuses other keys (422, after the body was read and parsed)
  const wrapped = POST_INPUT === 'value';
  const head = wrapped ? '{"agent":"echo","input":{"value":{' : '{"agent":"echo","input":{';
  const tail = wrapped ? '}}}' : '}}';
  const parts = [];
  let size = head.length + tail.length;
  for (let k = 0; size < POST_BYTES; k++) {
    const part = `${k ? ',' : ''}"k${k}":${k % 10}`;
    parts.push(part);
    size += part.length;
  }
  const body = Buffer.from(`${head}${parts.join('')}${tail}`);
  const headers = { 'content-type': 'application/json', 'content-length': body.length };

  const mark = logMark();
  await sleep(1000);
  resetPeak();
  const before = { fds: fds(), ...mem() };
  let sampledPeak = before.rss;
  let maxFds = before.fds;
  const sampler = setInterval(() => {
    try {
      sampledPeak = Math.max(sampledPeak, mem().rss);
      maxFds = Math.max(maxFds, fds());
    } catch {
      /* the server went */
    }
  }, 50);
  const cpu = cpuMeter();
  const results = await Promise.all(
    Array.from({ length: POSTS }, () =>
      request({ method: 'POST', path: '/v1/runs', headers, body, timeoutMs: 120000, keepBody: true }),
    ),
  );
  const { cores, secs } = cpu.stop();
  clearInterval(sampler);
  const end = { fds: fds(), ...mem() };
  await sleep(5000);
  const later = { fds: fds(), ...mem() };
  const statuses = {};
  for (const r of results) bump(statuses, r.error ?? String(r.status));
  const problems = {};
  for (const r of results) {
    if (!(r.status >= 400 && r.body)) continue;
    let gist;
    try {
      const p = JSON.parse(r.body);
      gist = `${p.status} ${p.code ?? p.title}: ${p.errors?.[0]?.message ?? p.detail ?? ''}`;
    } catch {
      gist = `${r.status} ${r.body}`;
    }
    bump(problems, gist.replace(/\s+/g, ' ').slice(0, 80));
  }
  const ms = results.map((r) => r.ms);
  const peak = Math.max(sampledPeak, end.hwm, later.hwm);
  const facts = {
    posts: POSTS,
    post_input: POST_INPUT,
    body_bytes: body.length,
    keys: parts.length,
    statuses,
    wall_secs: r3(secs),
    median_ms: r1(median(ms)),
    max_ms: r1(Math.max(...ms)),
    rss_before_mib: r1(before.rss),
    rss_peak_sampled_mib: r1(sampledPeak),
    rss_end_mib: r1(end.rss),
    rss_5s_after_mib: r1(later.rss),
    fds_peak_sampled: maxFds,
    problems,
    server_log: logSince(mark),
  };
  const text = [
    `${POSTS}×${r1(body.length / 1e6)} MB (${parts.length} keys${wrapped ? ' in input.value' : ''}) in ${r1(secs)} s`,
    `statuses ${countsText(statuses)}`,
    `RSS before ${r1(before.rss)}, peak sampled ${r1(sampledPeak)}, 5 s after ${r1(later.rss)}`,
    `fds peak ${maxFds}`,
    Object.keys(problems).length ? `problems ${countsText(problems)}` : null,
    Object.keys(facts.server_log).length ? `server log ${countsText(facts.server_log)}` : null,
  ]
    .filter(Boolean)
    .join('; ');
  // the burst's figures: fds at its peak, RSS 5 s after, peak RSS during it
  return { fds: maxFds, rss: later.rss, peak, cpu: cores, facts, text };
}

async function sse() {
  const waitingCount = async () => (await json('GET', '/v1/runs/counts')).by_status?.waiting ?? 0;
  const mark = logMark();
  const waiting0 = await waitingCount();
  const run = { agent: 'echo', input: { value: 1, wait_for: ['never'] } };
  const ids = [];
  const tc = now();
  for (let start = 0; start < SSE; start += 1000) {
    const n = Math.min(1000, SSE - start);
    const created = await json('POST', '/v1/runs/batch', { runs: Array(n).fill(run) });
    ids.push(...created.runs.map((r) => r.id));
  }
  const createSecs = (now() - tc) / 1000;
  // until they all wait (at most a minute): their start is not what is measured
  let waiting = 0;
  const tw = now();
  while (now() - tw < 60000) {
    waiting = (await waitingCount()) - waiting0;
    if (waiting >= SSE) break;
    await sleep(500);
  }
  const waitSecs = (now() - tw) / 1000;
  log(`sse: ${ids.length} runs created in ${r1(createSecs)} s, ${waiting} waiting after ${r1(waitSecs)} s more`);
  await sleep(2000);
  resetPeak();
  const before = { fds: fds(), ...mem() };

  const streams = [];
  try {
    return await sseWith(ids, streams, { mark, waiting, createSecs, before });
  } finally {
    for (const s of streams) {
      s.ours = true;
      s.req?.destroy();
    }
  }
}

async function sseWith(ids, streams, { mark, waiting, createSecs, before }) {
  const statuses = {};
  const open = (id) =>
    new Promise((resolve) => {
      const st = { created: false, events: 0, bytes: 0, ended: false, ours: false };
      streams.push(st);
      let head = '';
      let done = false;
      const settle = (why) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        bump(statuses, why);
        resolve();
      };
      const req = http.get({
        host,
        port,
        path: `/v1/runs/${id}/events`,
        headers: { accept: 'text/event-stream' },
        agent: false,
      });
      st.req = req;
      const timer = setTimeout(() => settle('no created event in 15 s'), 15000);
      req.on('error', (e) => {
        st.error = e.code || e.message;
        if (!st.ours) st.ended = true;
        settle(st.error);
      });
      req.on('response', (res) => {
        if (res.statusCode !== 200) {
          res.resume();
          settle(String(res.statusCode));
          return;
        }
        res.setEncoding('utf8');
        let partial = '';
        res.on('data', (d) => {
          st.bytes += d.length;
          // whole lines only: an `event:` split across two chunks is counted once
          const lines = (partial + d).split('\n');
          partial = lines.pop();
          st.events += lines.filter((l) => l.startsWith('event:')).length;
          if (!st.created) {
            head += d;
            if (/^event: ?created\r?$/m.test(head)) {
              st.created = true;
              settle('200 created');
            } else if (head.length > 65536) settle('200 without created');
          }
        });
        res.on('end', () => {
          if (!st.ours) st.ended = true;
          settle('200 ended');
        });
        res.on('error', () => {});
      });
    });
  const to = now();
  await pool(ids.length, 200, (k) => open(ids[k]));
  const openSecs = (now() - to) / 1000;
  const withCreated = streams.filter((s) => s.created).length;
  log(`sse: ${streams.length} streams open in ${r1(openSecs)} s: ${countsText(statuses)}`);

  const events0 = streams.reduce((a, s) => a + s.events, 0);
  const bytes0 = streams.reduce((a, s) => a + s.bytes, 0);
  const cpu = cpuMeter();
  await sleep(WINDOW_SECS * 1000);
  const { cores } = cpu.stop();
  const during = { fds: fds(), ...mem() };
  const eventsInWindow = streams.reduce((a, s) => a + s.events, 0) - events0;
  const bytesInWindow = streams.reduce((a, s) => a + s.bytes, 0) - bytes0;
  const endedByServer = streams.filter((s) => s.ended).length;
  for (const s of streams) {
    s.ours = true;
    s.req.destroy();
  }
  await sleep(2000);
  const after = { fds: fds(), ...mem() };
  const perClientKiB = ((during.rss - before.rss) * 1024) / Math.max(1, streams.length);
  const facts = {
    sse: SSE,
    runs_created: ids.length,
    create_secs: r1(createSecs),
    waiting,
    streams: streams.length,
    with_created: withCreated,
    statuses,
    open_secs: r1(openSecs),
    ended_by_server: endedByServer,
    events_in_window: eventsInWindow,
    bytes_in_window: bytesInWindow,
    fds_before: before.fds,
    rss_before_mib: r1(before.rss),
    rss_per_client_kib: r1(perClientKiB),
    fds_after_close: after.fds,
    rss_after_close_mib: r1(after.rss),
    server_log: logSince(mark),
  };
  const text = [
    `${withCreated}/${SSE} streams got created (${countsText(statuses)}), ${waiting} runs waiting`,
    `RSS before ${r1(before.rss)}, ${r1(perClientKiB)} KiB/client`,
    `in window ${eventsInWindow} events ${bytesInWindow} B, ${endedByServer} ended by server`,
    `after close fds ${after.fds} RSS ${r1(after.rss)}`,
    Object.keys(facts.server_log).length ? `server log ${countsText(facts.server_log)}` : null,
  ]
    .filter(Boolean)
    .join('; ');
  return { fds: during.fds, rss: during.rss, peak: during.hwm, cpu: cores, facts, text };
}

// --- main ---
async function main() {
  const scenarios = { idle, posts, sse };
  const rows = [];
  for (const name of SCENARIOS) {
    const t0 = now();
    let row;
    try {
      if (!scenarios[name]) throw new Error(`no scenario ${name} (idle, posts, sse)`);
      if (!alive()) throw new Error('the server is not running');
      log(`${name}: starting`);
      row = { scenario: name, ...(await scenarios[name]()) };
    } catch (e) {
      row = { scenario: name, error: String(e.message ?? e), text: `ERROR ${e.message ?? e}` };
      let state = {};
      try {
        state = { fds: fds(), rss: mem().rss, peak: mem().hwm };
      } catch {
        /* the server went */
      }
      Object.assign(row, state);
    }
    row.secs = (now() - t0) / 1000;
    rows.push(row);
    const { text, facts, ...figures } = row;
    console.log(
      'RESULT ' +
        JSON.stringify({
          ...figures,
          rss_mib: r1(row.rss),
          peak_mib: r1(row.peak),
          cpu_cores: r3(row.cpu),
          secs: r1(row.secs),
          rss: undefined,
          peak: undefined,
          cpu: undefined,
          ...facts,
        }),
    );
  }

  const pad = (s, n) => String(s ?? '-').padEnd(n);
  const lpad = (s, n) => String(s ?? '-').padStart(n);
  console.log();
  console.log(`${pad('scenario', 9)}${lpad('fds', 7)}${lpad('RSS MiB', 9)}${lpad('peak MiB', 10)}${lpad('CPU cores', 11)}  facts`);
  for (const r of rows) {
    console.log(
      `${pad(r.scenario, 9)}${lpad(r.fds, 7)}${lpad(r1(r.rss), 9)}${lpad(r1(r.peak), 10)}${lpad(
        Number.isFinite(r.cpu) ? r.cpu.toFixed(3) : '-',
        11,
      )}  ${r.text}`,
    );
  }
  console.log(
    `(fds: /proc/PID/fd; RSS: VmRSS at the window's end (posts: 5 s after the burst); peak: VmHWM since the ` +
      `scenario began (posts: the burst); CPU: utime+stime over the window (posts: the burst) per wall second)`,
  );
}

if (process.argv[2] === '--hold') hold();
else {
  await main();
  // nothing of a failed scenario may hold the process open
  process.exit(0);
}
