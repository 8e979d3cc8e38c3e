// Fan-out bench peer (bench/fanout.py): Element's crypto (matrix-js-sdk 43 + matrix-sdk-crypto-wasm, Rust
// crypto) sends the FIRST message in an encrypted room with many devices, and times it.
//
// Protocol (stdin -> stdout, one JSON object per line; logs go to stderr only, never a secret or body):
//   in  {"baseUrl", "userId", "password", "roomId", "timeoutMs"?}   log in a fresh device, sync, wait for
//                                                                      the room and for the device to settle
//   out {"ready": true, "deviceId"}
//   in  {"go": true}                                                  send one m.text message, timed
//   out {"ok": true, "seconds", "phases": {phase: {n, seconds}}, "to_device": {event type: messages}}
//   out {"ok": false, "error": "..."}                                  on any failure (exit code 1)
//
// What is timed: from just before client.sendMessage(room, {msgtype: "m.text", ...}) until its promise
// resolves (the PUT /send answered). On a room's first message the Rust crypto's RoomEncryptor tracks
// the members, runs the pending /keys/query, claims one-time keys for devices without an Olm session
// (/keys/claim), shares the room key (Olm-encrypted, /sendToDevice) and only then sends the event.
//
// Fairness with nimbus: nimbus's timed send begins with /keys/query of the room's members (the bench
// keeps its setup sync from querying them). matrix-js-sdk starts tracking members while it processes
// the initial sync and would query them in the background before the timer starts; so a /keys/query
// naming anyone but ourselves is held (not sent) until "go", and released when the timer starts.
// Key sharing: all devices (AllDevicesIsolationMode, no blacklisting of unverified devices), which is
// also the SDK's default; the bench's recipient devices are not cross-signed.
import { createInterface } from "node:readline";

for (const level of ["log", "info", "debug", "trace"]) console[level] = (...a) => console.error(...a);

const sdk = await import("matrix-js-sdk");
const { AllDevicesIsolationMode } = await import("matrix-js-sdk/lib/crypto-api/index.js");
const { logger: sdkLogger } = await import("matrix-js-sdk/lib/logger.js");
const { ClientEvent, MemoryStore } = sdk;

const level = process.env.JSPEER_LOG_LEVEL ?? "warn";
sdkLogger.setLevel?.(level);
const quiet = { trace() {}, debug() {}, info() {} };
function makeLogger(prefix) {
  const write = (lvl) => (...a) => process.stderr.write(`[${prefix}] ${lvl}: ${a.map(String).join(" ")}\n`);
  return {
    ...(level === "debug" ? { trace: write("debug"), debug: write("debug"), info: write("info") } : quiet),
    warn: write("warn"),
    error: write("error"),
    getChild: (ns) => makeLogger(`${prefix}${ns}`),
  };
}
const log = makeLogger("bench-fanout");
const emit = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");

// ---- HTTP accounting: every request of the SDK goes through this fetch ----------------------------------
const PHASES = [
  ["keys_query", "/keys/query"],
  ["keys_claim", "/keys/claim"],
  ["keys_upload", "/keys/upload"],
  ["to_device", "/sendToDevice/"],
  ["members", "/members"],
  ["send", "/send/"],
  ["sync", "/sync"],
];
function phaseOf(path) {
  for (const [name, part] of PHASES) if (path.includes(part)) return name;
  return "other";
}

let ownUserId = null;
let armed = false; // true from "go": held /keys/query requests may leave
let release = null;
const released = new Promise((resolve) => (release = resolve));
let recording = false;
const stats = {}; // phase -> {n, seconds} while recording
const toDevice = {}; // event type -> messages sent while recording
let inFlight = 0; // requests other than /sync long-polls and held queries

function namesOthers(body) {
  try {
    const users = Object.keys(JSON.parse(body).device_keys ?? {});
    return users.some((u) => u !== ownUserId);
  } catch {
    return false;
  }
}

async function benchFetch(input, init = {}) {
  const url = input instanceof URL ? input : new URL(typeof input === "string" ? input : input.url);
  const phase = phaseOf(url.pathname);
  const body = typeof init.body === "string" ? init.body : null;
  if (phase === "keys_query" && !armed && body && namesOthers(body)) {
    log.info("holding a /keys/query of the room's members until the timer starts");
    await released;
  }
  const counted = phase !== "sync";
  if (counted) inFlight += 1;
  const t0 = performance.now();
  try {
    return await fetch(input, init);
  } finally {
    if (counted) inFlight -= 1;
    if (recording) {
      const s = (stats[phase] ??= { n: 0, seconds: 0 });
      s.n += 1;
      s.seconds += (performance.now() - t0) / 1000;
      if (phase === "to_device" && body) {
        const type = decodeURIComponent(url.pathname.split("/sendToDevice/")[1].split("/")[0]);
        for (const devices of Object.values(JSON.parse(body).messages ?? {}))
          toDevice[type] = (toDevice[type] ?? 0) + Object.keys(devices).length;
      }
    }
  }
}

/** Resolve when `check()` is true; re-checked every 50 ms and on sync events (no fixed sleep). */
function waitFor(client, check, timeoutMs, what) {
  return new Promise((resolve, reject) => {
    const done = (fn, v) => {
      clearInterval(timer);
      clearTimeout(deadline);
      client.off(ClientEvent.Sync, recheck);
      fn(v);
    };
    const recheck = () => {
      if (check()) done(resolve, true);
    };
    const timer = setInterval(recheck, 50);
    const deadline = setTimeout(() => done(reject, new Error(`timed out waiting for ${what}`)), timeoutMs);
    client.on(ClientEvent.Sync, recheck);
    recheck();
  });
}

async function readLines() {
  const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
  return async () => {
    const next = await lines.next();
    if (next.done) throw new Error("stdin closed");
    return JSON.parse(next.value);
  };
}

async function main() {
  const next = await readLines();
  const { baseUrl, userId, password, roomId, timeoutMs = 120000 } = await next();
  ownUserId = userId;
  const loginClient = sdk.createClient({ baseUrl, fetchFn: benchFetch, logger: makeLogger("login") });
  const resp = await loginClient.loginRequest({
    type: "m.login.password",
    identifier: { type: "m.id.user", user: userId },
    password,
    initial_device_display_name: "fanout bench (matrix-js-sdk)",
  });
  const client = sdk.createClient({
    baseUrl,
    userId: resp.user_id,
    deviceId: resp.device_id,
    accessToken: resp.access_token,
    store: new MemoryStore(),
    fetchFn: benchFetch,
    logger: makeLogger(`js ${resp.device_id}`),
  });
  try {
    await client.initRustCrypto({ useIndexedDB: false });
    const crypto = client.getCrypto();
    crypto.globalBlacklistUnverifiedDevices = false;
    crypto.setDeviceIsolationMode(new AllDevicesIsolationMode(false));
    await client.startClient({ initialSyncLimit: 1, lazyLoadMembers: false });
    await waitFor(client, () => client.isInitialSyncComplete(), timeoutMs, "the first sync");
    await waitFor(client, () => client.getRoom(roomId)?.getMyMembership() === "join", timeoutMs, "the room");
    await waitFor(client, () => client.getRoom(roomId).hasEncryptionStateEvent(), timeoutMs, "encryption state");
    let encrypting = false; // the crypto has a RoomEncryptor for the room (set from the synced state)
    await waitFor(
      client,
      () => {
        crypto.isEncryptionEnabledInRoom(roomId).then((on) => (encrypting = on));
        return encrypting;
      },
      timeoutMs,
      "the crypto to know the room is encrypted",
    );
    // Settled: our own keys are uploaded and nothing but held queries and the long-poll is in flight.
    await waitFor(client, () => inFlight === 0, timeoutMs, "the device to settle");
    emit({ ready: true, deviceId: resp.device_id });
    const go = await next();
    if (!go.go) throw new Error("expected {go: true}");
    recording = true;
    armed = true;
    const t0 = performance.now();
    release();
    await client.sendMessage(roomId, { msgtype: "m.text", body: "fanout bench" });
    const seconds = (performance.now() - t0) / 1000;
    recording = false;
    const phases = {};
    for (const [name, s] of Object.entries(stats)) phases[name] = { n: s.n, seconds: Number(s.seconds.toFixed(4)) };
    emit({ ok: true, seconds, phases, to_device: toDevice, node: process.version });
  } finally {
    client.stopClient();
  }
}

try {
  await main();
  process.exit(0);
} catch (e) {
  log.error(`failed: ${e?.message ?? e}`);
  emit({ ok: false, error: String(e?.message ?? e) });
  process.exit(1);
}
