// Element's own crypto as a test peer for nimbus: matrix-js-sdk 43 + @matrix-org/matrix-sdk-crypto-wasm
// (Rust crypto) in Node 22, driven over JSON lines.
//
// Protocol (stdin -> stdout, one JSON object per line):
//   request  {"id": <any>, "cmd": "<name>", ...args}
//   response {"id": <same>, "ok": true, "result": {...}} or {"id": <same>, "ok": false, "error": "..."}
//   pushed   {"event": "<kind>", ...}   (asynchronous: "ready", "invite", "message", "to_device")
// Every command is listed in COMMANDS below. Logs go to stderr only (stdout is the protocol channel);
// nothing secret (access token, password, keys' private parts) or message body is ever logged.
// Waits are on conditions (client events plus a short re-check interval) with a timeout, never on a
// fixed sleep.
//
// Cross-signing and key sharing: after login this peer has no cross-signing identity and shares room
// keys with every device (crypto.globalBlacklistUnverifiedDevices = false,
// crypto.setDeviceIsolationMode(new AllDevicesIsolationMode(false)): the SDK's defaults).
// `bootstrap_cross_signing` gives the user master/self-signing/user-signing keys and signs this device
// (nimbus devices may be cross-signed by their owner too: `device_verification` shows it);
// `reset_identity` replaces the identity; `set_isolation {mode: "only_signed"}` switches to MSC4153's
// "exclude insecure devices" (room keys only to, and events only from, devices cross-signed by their
// owner). Failure codes are matrix-js-sdk's DecryptionFailureCode strings, e.g.
// MEGOLM_KEY_WITHHELD_FOR_UNVERIFIED_DEVICE (the sender withheld the key with m.unverified) and
// UNSIGNED_SENDER_DEVICE (only_signed mode: the sender's device is not cross-signed by its owner).
// No private cross-signing key or password ever leaves this process or reaches a log line.
import { createHash, createCipheriv, createDecipheriv, randomBytes } from "node:crypto";
import { createInterface } from "node:readline";

// stdout belongs to the protocol: send any stray console output of the SDK to stderr.
for (const level of ["log", "info", "debug", "trace"]) console[level] = (...a) => console.error(...a);

const sdk = await import("matrix-js-sdk");
const { AllDevicesIsolationMode, OnlySignedDevicesIsolationMode, CrossSigningKey, EventShieldColour, EventShieldReason } =
  await import("matrix-js-sdk/lib/crypto-api/index.js");
const { logger: sdkLogger } = await import("matrix-js-sdk/lib/logger.js");
const { ClientEvent, RoomEvent, RoomMemberEvent, MatrixEventEvent, MemoryStore, EventType } = sdk;

const LOG_LEVELS = { debug: 10, info: 20, warn: 30, error: 40 };
const logLevel = LOG_LEVELS[process.env.JSPEER_LOG_LEVEL ?? "warn"] ?? 30;
sdkLogger.setLevel?.(process.env.JSPEER_LOG_LEVEL ?? "warn");
function makeLogger(prefix) {
  const at = (lvl) => (...a) => {
    if (LOG_LEVELS[lvl] >= logLevel) process.stderr.write(`[${prefix}] ${lvl}: ${a.map(String).join(" ")}\n`);
  };
  return {
    trace: at("debug"), debug: at("debug"), info: at("info"), warn: at("warn"), error: at("error"),
    getChild: (ns) => makeLogger(`${prefix}${ns}`),
  };
}
const log = makeLogger("jspeer");

function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + "\n");
}

// To-device contents pushed to the harness never carry key material.
const SECRET_FIELDS = ["session_key", "secret", "private_key"];

// ---- state -----------------------------------------------------------------------------------------
let client = null;
let accessToken = null;
let baseUrl = null;
const waiters = new Set(); // re-check functions woken by client events

function wake() {
  for (const w of [...waiters]) w();
}

/** Resolve with `check()`'s first truthy value; re-checked on every client event and every 100 ms. */
function waitFor(check, timeoutMs, what) {
  return new Promise((resolve, reject) => {
    let done = false;
    const finish = (fn, v) => {
      if (done) return;
      done = true;
      waiters.delete(recheck);
      clearInterval(timer);
      clearTimeout(deadline);
      fn(v);
    };
    const recheck = async () => {
      try {
        const v = await check();
        if (v) finish(resolve, v);
      } catch (e) {
        finish(reject, e);
      }
    };
    const timer = setInterval(recheck, 100);
    const deadline = setTimeout(
      () => finish(reject, new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)),
      timeoutMs,
    );
    waiters.add(recheck);
    recheck();
  });
}

function need(cond, msg) {
  if (!cond) throw new Error(msg);
}

function requireClient() {
  need(client, "not logged in: send `login` first");
  return client;
}

function requireRoom(roomId) {
  const room = requireClient().getRoom(roomId);
  need(room, `unknown room ${roomId}`);
  return room;
}

// ---- event description -------------------------------------------------------------------------
function describe(ev) {
  const wire = ev.getWireContent() ?? {};
  const encrypted = ev.isEncrypted();
  const failed = ev.isDecryptionFailure();
  return {
    event_id: ev.getId(),
    room_id: ev.getRoomId(),
    sender: ev.getSender(),
    type: ev.getType(), // the clear type when decrypted
    wire_type: ev.getWireType(),
    content: failed ? null : ev.getContent(),
    origin_server_ts: ev.getTs(),
    state_key: ev.getStateKey() ?? null,
    encrypted,
    decrypted: encrypted && !failed && !ev.isBeingDecrypted() && ev.getClearContent() !== null,
    decryption_failure: failed ? String(ev.decryptionFailureReason ?? "unknown") : null,
    being_decrypted: ev.isBeingDecrypted(),
    algorithm: encrypted ? (wire.algorithm ?? null) : null,
    session_id: encrypted ? (wire.session_id ?? null) : null,
    sender_device: encrypted ? (wire.device_id ?? null) : null,
    sender_key: encrypted ? (ev.getSenderKey() ?? wire.sender_key ?? null) : null,
    claimed_ed25519: encrypted && !failed ? (ev.getClaimedEd25519Key() ?? null) : null,
  };
}

function timelineEvents(room) {
  return room.getLiveTimeline().getEvents();
}

function findEvent(room, eventId) {
  return room.findEventById(eventId) ?? timelineEvents(room).find((e) => e.getId() === eventId) ?? null;
}

function isSettled(ev) {
  return !ev.isBeingDecrypted() && !(ev.isEncrypted() && ev.getClearContent() === null && !ev.isDecryptionFailure());
}

// ---- cross-signing helpers ---------------------------------------------------------------------------
/** A UIA callback for key uploads: first without auth; if the server asks (401 with flows), the
 * m.login.password stage. `used()` says which it took. The password stays in this closure. */
function uiaPassword(password) {
  let used = "none";
  const callback = async (makeRequest) => {
    try {
      return await makeRequest(null);
    } catch (e) {
      const flows = e?.data?.flows;
      if (e?.httpStatus !== 401 || !Array.isArray(flows)) throw e;
      need(password, "the server wants user-interactive auth for the key upload but no password was given");
      used = "password";
      return await makeRequest({
        type: "m.login.password",
        identifier: { type: "m.id.user", user: client.getUserId() },
        password,
        ...(e.data.session ? { session: e.data.session } : {}),
      });
    }
  };
  return { callback, used: () => used };
}

/** This user's public cross-signing keys as this device holds them (null where it lacks the private key). */
async function ownCrossSigningKeys() {
  const crypto = client.getCrypto();
  return {
    masterKey: await crypto.getCrossSigningKeyId(CrossSigningKey.Master),
    selfSigningKey: await crypto.getCrossSigningKeyId(CrossSigningKey.SelfSigning),
    userSigningKey: await crypto.getCrossSigningKeyId(CrossSigningKey.UserSigning),
  };
}

async function ownDeviceSigned() {
  const status = await client.getCrypto().getDeviceVerificationStatus(client.getUserId(), client.getDeviceId());
  return Boolean(status?.signedByOwner);
}

/** The user's public master key as the server serves it now (POST /keys/query), or null. */
async function serverMasterKey(userId) {
  const resp = await client.http.authedRequest("POST", "/keys/query", undefined, { device_keys: { [userId]: [] } });
  const keys = Object.values(resp?.master_keys?.[userId]?.keys ?? {});
  return keys.length ? keys[0] : null;
}

/** describe(ev) plus, for a decrypted event, the shield Element would show (getEncryptionInfoForEvent). */
async function describeWithTrust(ev) {
  const d = describe(ev);
  if (d.decrypted) {
    const info = await client.getCrypto().getEncryptionInfoForEvent(ev);
    d.shield = info
      ? {
          colour: EventShieldColour[info.shieldColour] ?? String(info.shieldColour),
          reason: info.shieldReason === null ? null : (EventShieldReason[info.shieldReason] ?? String(info.shieldReason)),
        }
      : null;
  }
  return d;
}

// ---- encrypted attachments (spec: client-server API, "Sending encrypted attachments", v2) ---------
const b64 = (buf) => Buffer.from(buf).toString("base64").replace(/=+$/, "");
const b64url = (buf) => Buffer.from(buf).toString("base64url");
const unb64 = (s) => Buffer.from(s.replace(/-/g, "+").replace(/_/g, "/"), "base64");

function encryptAttachment(plain) {
  const key = randomBytes(32);
  const iv = Buffer.concat([randomBytes(8), Buffer.alloc(8)]); // counter half starts at zero
  const cipher = createCipheriv("aes-256-ctr", key, iv);
  const data = Buffer.concat([cipher.update(plain), cipher.final()]);
  return {
    data,
    info: {
      v: "v2",
      key: { kty: "oct", key_ops: ["encrypt", "decrypt"], alg: "A256CTR", k: b64url(key), ext: true },
      iv: b64(iv),
      hashes: { sha256: b64(createHash("sha256").update(data).digest()) },
    },
  };
}

function decryptAttachment(data, file) {
  need(file.v === "v2", `unsupported attachment version ${file.v}`);
  need(file.key?.alg === "A256CTR", "attachment key is not A256CTR");
  const want = file.hashes?.sha256;
  need(want, "attachment has no sha256 hash");
  const got = b64(createHash("sha256").update(data).digest());
  need(got === want.replace(/=+$/, ""), "attachment sha256 mismatch: ciphertext was altered");
  const decipher = createDecipheriv("aes-256-ctr", unb64(file.key.k), unb64(file.iv));
  return Buffer.concat([decipher.update(data), decipher.final()]);
}

async function download(mxc) {
  const url = client.mxcUrlToHttp(mxc, undefined, undefined, undefined, false, true, true);
  need(url, `cannot map ${mxc} to a download URL`);
  const resp = await fetch(url, { headers: { Authorization: `Bearer ${accessToken}` } });
  need(resp.ok, `download of ${mxc} failed: HTTP ${resp.status}`);
  return Buffer.from(await resp.arrayBuffer());
}

// ---- commands ----------------------------------------------------------------------------------------
const COMMANDS = {
  async ping() {
    return { pong: true, node: process.version };
  },

  // {baseUrl, userId, password, deviceId?, deviceName?, syncTimeoutMs?} -> {userId, deviceId, curve25519, ed25519}
  async login({ baseUrl: url, userId, password, deviceId, deviceName, syncTimeoutMs = 30000 }) {
    need(!client, "already logged in");
    baseUrl = url;
    const loginClient = sdk.createClient({ baseUrl, logger: makeLogger("login") });
    const resp = await loginClient.loginRequest({
      type: "m.login.password",
      identifier: { type: "m.id.user", user: userId },
      password,
      ...(deviceId ? { device_id: deviceId } : {}),
      initial_device_display_name: deviceName ?? "jspeer",
    });
    accessToken = resp.access_token;
    client = sdk.createClient({
      baseUrl,
      userId: resp.user_id,
      deviceId: resp.device_id,
      accessToken,
      store: new MemoryStore(),
      logger: makeLogger(`js ${resp.device_id}`),
      timelineSupport: true,
    });
    await client.initRustCrypto({ useIndexedDB: false });
    const crypto = client.getCrypto();
    crypto.globalBlacklistUnverifiedDevices = false;
    crypto.setDeviceIsolationMode(new AllDevicesIsolationMode(false));
    for (const name of [ClientEvent.Sync, ClientEvent.Room, ClientEvent.ReceivedToDeviceMessage]) client.on(name, wake);
    client.on(RoomEvent.Timeline, (ev, room, toStart) => {
      wake();
      if (toStart || !room) return;
      const push = () => emit({ event: "message", ...describe(ev) });
      if (ev.isBeingDecrypted() || (ev.isEncrypted() && ev.getClearContent() === null && !ev.isDecryptionFailure()))
        ev.once(MatrixEventEvent.Decrypted, push);
      else push();
    });
    client.on(MatrixEventEvent.Decrypted, wake);
    client.on(ClientEvent.ReceivedToDeviceMessage, ({ message, encryptionInfo }) => {
      const content = { ...(message.content ?? {}) };
      for (const secret of SECRET_FIELDS) if (secret in content) content[secret] = "<redacted>";
      emit({
        event: "to_device",
        type: message.type,
        sender: message.sender,
        content,
        encrypted: encryptionInfo !== null,
        sender_device: encryptionInfo?.senderDevice ?? null,
        sender_key: encryptionInfo?.senderCurve25519KeyBase64 ?? null,
      });
    });
    client.on(RoomMemberEvent.Membership, (_ev, member) => {
      wake();
      if (member.userId === client.getUserId() && member.membership === "invite")
        emit({ event: "invite", room_id: member.roomId, inviter: member.events.member?.getSender() ?? null });
    });
    await client.startClient({ initialSyncLimit: 50, lazyLoadMembers: false });
    await waitFor(() => client.isInitialSyncComplete(), syncTimeoutMs, "the first sync");
    const keys = await crypto.getOwnDeviceKeys();
    log.info(`logged in as ${resp.user_id} device ${resp.device_id}`);
    return { userId: resp.user_id, deviceId: resp.device_id, curve25519: keys.curve25519, ed25519: keys.ed25519 };
  },

  // {name?, invite?: [userId], encrypted = true, historyVisibility?, preset?} -> {roomId}
  async create_room({ name, invite = [], encrypted = true, historyVisibility, preset = "private_chat" }) {
    const initial_state = [];
    if (encrypted)
      initial_state.push({ type: "m.room.encryption", state_key: "", content: { algorithm: "m.megolm.v1.aes-sha2" } });
    if (historyVisibility)
      initial_state.push({ type: "m.room.history_visibility", state_key: "", content: { history_visibility: historyVisibility } });
    const { room_id } = await requireClient().createRoom({ name, invite, preset, initial_state });
    await waitFor(() => client.getRoom(room_id)?.getMyMembership() === "join", 30000, `room ${room_id} in sync`);
    return { roomId: room_id };
  },

  // {roomId, timeoutMs} -> {roomId}; waits until this user is invited to the room (seen in sync).
  async wait_for_invite({ roomId, timeoutMs = 30000 }) {
    requireClient();
    await waitFor(() => client.getRoom(roomId)?.getMyMembership() === "invite", timeoutMs, `an invite to ${roomId}`);
    return { roomId };
  },

  // {roomId, timeoutMs?} -> {roomId}; returns once the join is seen in sync.
  async join({ roomId, timeoutMs = 30000 }) {
    await requireClient().joinRoom(roomId);
    await waitFor(() => client.getRoom(roomId)?.getMyMembership() === "join", timeoutMs, `the join of ${roomId}`);
    return { roomId };
  },

  async leave({ roomId, timeoutMs = 30000 }) {
    await requireClient().leave(roomId);
    await waitFor(() => client.getRoom(roomId)?.getMyMembership() !== "join", timeoutMs, `leaving ${roomId}`);
    return { roomId };
  },

  async invite({ roomId, userId }) {
    await requireClient().invite(roomId, userId);
    return { roomId, userId };
  },

  // {roomId, userId, membership = "join", timeoutMs} -> {membership}; waits until this peer's view of
  // the room shows the member with that membership (send only after it, so the member gets the key).
  async wait_for_member({ roomId, userId, membership = "join", timeoutMs = 30000 }) {
    requireClient();
    await waitFor(
      () => client.getRoom(roomId)?.getMember(userId)?.membership === membership,
      timeoutMs,
      `${userId} to be ${membership} in ${roomId}`,
    );
    return { membership };
  },

  // {roomId, body, msgtype = "m.text"} -> {eventId}
  async send_text({ roomId, body, msgtype = "m.text" }) {
    requireRoom(roomId);
    const { event_id } = await client.sendMessage(roomId, { msgtype, body });
    return { eventId: event_id };
  },

  // {roomId, body?, sender?, timeoutMs, decrypted?: bool} -> described event (see describe()), with
  // `shield: {colour: "NONE"|"GREY"|"RED", reason: EventShieldReason name | null}` when decrypted.
  async wait_for_message({ roomId, body, sender, timeoutMs = 30000, decrypted }) {
    requireClient();
    const ev = await waitFor(
      () => {
        const room = client.getRoom(roomId);
        if (!room) return null;
        return timelineEvents(room).find(
          (e) =>
            e.getType() === EventType.RoomMessage &&
            isSettled(e) &&
            (body === undefined || e.getContent().body === body) &&
            (sender === undefined || e.getSender() === sender) &&
            (decrypted === undefined || (e.isEncrypted() && !e.isDecryptionFailure()) === decrypted),
        );
      },
      timeoutMs,
      `a message in ${roomId}${sender ? ` from ${sender}` : ""}`,
    );
    return describeWithTrust(ev);
  },

  // {roomId} -> {events: [described event]} (the live timeline, oldest first)
  async messages({ roomId }) {
    return { events: timelineEvents(requireRoom(roomId)).map(describe) };
  },

  // {roomId, eventId, timeoutMs} -> {sessionId, senderKey, senderDevice}; waits until the event is in the timeline.
  async session_id_of({ roomId, eventId, timeoutMs = 30000 }) {
    requireClient();
    const ev = await waitFor(() => client.getRoom(roomId) && findEvent(client.getRoom(roomId), eventId), timeoutMs, `event ${eventId}`);
    const d = describe(ev);
    return { sessionId: d.session_id, senderKey: d.sender_key, senderDevice: d.sender_device, encrypted: d.encrypted };
  },

  // {roomId, dataBase64, name, mimetype, msgtype = "m.file"} -> {eventId, mxc}
  async send_attachment({ roomId, dataBase64, name, mimetype = "application/octet-stream", msgtype = "m.file" }) {
    const room = requireRoom(roomId);
    const plain = Buffer.from(dataBase64, "base64");
    const info = { mimetype, size: plain.length };
    let content;
    if (room.hasEncryptionStateEvent()) {
      const { data, info: file } = encryptAttachment(plain);
      const { content_uri } = await client.uploadContent(data, { name, type: "application/octet-stream", includeFilename: false });
      content = { msgtype, body: name, filename: name, info, file: { ...file, url: content_uri } };
    } else {
      const { content_uri } = await client.uploadContent(plain, { name, type: mimetype });
      content = { msgtype, body: name, filename: name, info, url: content_uri };
    }
    const { event_id } = await client.sendMessage(roomId, content);
    return { eventId: event_id, mxc: content.file?.url ?? content.url };
  },

  // {roomId, eventId, timeoutMs, raw = false} -> {dataBase64, name, mimetype, encrypted}; the hash is
  // checked before decrypting. raw: the bytes as stored on the server (the ciphertext), not checked.
  async download_attachment({ roomId, eventId, timeoutMs = 30000, raw = false }) {
    requireClient();
    const ev = await waitFor(
      () => {
        const room = client.getRoom(roomId);
        const e = room && findEvent(room, eventId);
        return e && isSettled(e) ? e : null;
      },
      timeoutMs,
      `event ${eventId}`,
    );
    need(!ev.isDecryptionFailure(), `event ${eventId} could not be decrypted: ${ev.decryptionFailureReason}`);
    const content = ev.getContent();
    let data;
    if (content.file && raw) data = await download(content.file.url);
    else if (content.file) data = decryptAttachment(await download(content.file.url), content.file);
    else if (content.url) data = await download(content.url);
    else throw new Error(`event ${eventId} has no attachment`);
    return {
      dataBase64: data.toString("base64"),
      name: content.filename ?? content.body,
      mimetype: content.info?.mimetype ?? null,
      encrypted: Boolean(content.file),
    };
  },

  // {userId, download = true} -> {devices: [{deviceId, curve25519, ed25519, algorithms, verified, displayName}]}
  async device_keys({ userId, download: dl = true }) {
    const map = await requireClient().getCrypto().getUserDeviceInfo([userId], dl);
    const devices = [...(map.get(userId)?.values() ?? [])].map((d) => ({
      deviceId: d.deviceId,
      curve25519: d.getIdentityKey() ?? null,
      ed25519: d.getFingerprint() ?? null,
      algorithms: d.algorithms,
      verified: d.verified,
      displayName: d.displayName ?? null,
    }));
    return { devices };
  },

  // {userId, count?, deviceIds?, timeoutMs} -> device_keys result; waits until at least `count`
  // devices (or all of `deviceIds`) are known.
  async wait_for_devices({ userId, count = 1, deviceIds = [], timeoutMs = 30000 }) {
    return waitFor(
      async () => {
        const res = await COMMANDS.device_keys({ userId });
        const ids = new Set(res.devices.map((d) => d.deviceId));
        return res.devices.length >= count && deviceIds.every((d) => ids.has(d)) ? res : null;
      },
      timeoutMs,
      `${count} device(s) of ${userId}`,
    );
  },

  // {eventType, devices: [{userId, deviceId}], content, encrypted = true} -> {}; returns once the
  // server accepted the PUT /sendToDevice. Encrypted: Olm per device via CryptoApi.encryptToDeviceMessages.
  async send_to_device({ eventType, devices, content, encrypted = true }) {
    const batch = encrypted
      ? await requireClient().getCrypto().encryptToDeviceMessages(eventType, devices, content)
      : { eventType, batch: devices.map(({ userId, deviceId }) => ({ userId, deviceId, payload: content })) };
    const map = new Map();
    for (const { userId, deviceId, payload } of batch.batch) {
      if (!map.has(userId)) map.set(userId, new Map());
      map.get(userId).set(deviceId, payload);
    }
    need(map.size > 0, "no device to send to (unknown devices are skipped when encrypting)");
    await requireClient().sendToDevice(batch.eventType, map);
    return { eventType: batch.eventType, count: batch.batch.length };
  },

  // {roomId} -> {}: the next message in the room starts a new Megolm session.
  async discard_session({ roomId }) {
    await requireClient().getCrypto().forceDiscardSession(roomId);
    return {};
  },

  // ---- cross-signing (spec: "Cross-signing", https://spec.matrix.org/v1.12/client-server-api/#cross-signing)

  // {password} -> {masterKey, selfSigningKey, userSigningKey, uia, deviceSigned}: gives this user a
  // cross-signing identity (new keys unless this device already holds them) and signs this device.
  // uia: "none" if the server took the key upload without user-interactive auth (Synapse: first
  // upload, MSC3967), "password" if it asked for the m.login.password stage.
  async bootstrap_cross_signing({ password }) {
    const crypto = requireClient().getCrypto();
    const auth = uiaPassword(password);
    await crypto.bootstrapCrossSigning({ authUploadDeviceSigningKeys: auth.callback });
    return { ...(await ownCrossSigningKeys()), uia: auth.used(), deviceSigned: await ownDeviceSigned() };
  },

  // {password} -> {masterKey, previousMasterKey, selfSigningKey, userSigningKey, uia, deviceSigned}:
  // replaces this user's cross-signing identity with a new one (bootstrapCrossSigning with
  // setupNewCrossSigning: true) and signs this device with it. Other users see a changed identity.
  async reset_identity({ password }) {
    const crypto = requireClient().getCrypto();
    const previousMasterKey = await crypto.getCrossSigningKeyId(CrossSigningKey.Master);
    const auth = uiaPassword(password);
    await crypto.bootstrapCrossSigning({ setupNewCrossSigning: true, authUploadDeviceSigningKeys: auth.callback });
    const keys = await ownCrossSigningKeys();
    need(keys.masterKey && keys.masterKey !== previousMasterKey, "reset_identity: the master key did not change");
    return { ...keys, previousMasterKey, uia: auth.used(), deviceSigned: await ownDeviceSigned() };
  },

  // {} -> {publicKeysOnDevice, privateKeysInSecretStorage, privateKeysCachedLocally: {masterKey,
  // selfSigningKey, userSigningKey}, isCrossSigningReady, masterKey, selfSigningKey, userSigningKey,
  // deviceSigned}; the keys are public keys (null while this device lacks the matching private keys).
  async cross_signing_status() {
    const crypto = requireClient().getCrypto();
    const status = await crypto.getCrossSigningStatus();
    return {
      publicKeysOnDevice: status.publicKeysOnDevice,
      privateKeysInSecretStorage: status.privateKeysInSecretStorage,
      privateKeysCachedLocally: { ...status.privateKeysCachedLocally },
      isCrossSigningReady: await crypto.isCrossSigningReady(),
      ...(await ownCrossSigningKeys()),
      deviceSigned: await ownDeviceSigned(),
    };
  },

  // {userId, deviceId, download = true} -> {known: true, signedByOwner, crossSigningVerified,
  // localVerified, isVerified} or {known: false}. download: fetch the user's keys first if untracked.
  async device_verification({ userId, deviceId, download: dl = true }) {
    const crypto = requireClient().getCrypto();
    if (dl) await crypto.getUserDeviceInfo([userId], true);
    const status = await crypto.getDeviceVerificationStatus(userId, deviceId);
    if (!status) return { known: false };
    return {
      known: true,
      signedByOwner: status.signedByOwner,
      crossSigningVerified: status.crossSigningVerified,
      localVerified: status.localVerified,
      isVerified: status.isVerified(),
    };
  },

  // {userId, download = true, until?: {field: value}, timeoutMs} -> {known, isCrossSigningVerified,
  // wasCrossSigningVerified, needsUserApproval, isVerified, masterKey}. masterKey: the user's public
  // master key from a fresh POST /keys/query (null if none). until: wait (re-checked on client events)
  // until every named field has the given value, e.g. {needsUserApproval: true} after a reset.
  async user_verification({ userId, download: dl = true, until, timeoutMs = 30000 }) {
    const crypto = requireClient().getCrypto();
    if (dl) await crypto.getUserDeviceInfo([userId], true);
    const read = async () => {
      const s = await crypto.getUserVerificationStatus(userId);
      return {
        known: s.known,
        isCrossSigningVerified: s.isCrossSigningVerified(),
        wasCrossSigningVerified: s.wasCrossSigningVerified(),
        needsUserApproval: s.needsUserApproval,
        isVerified: s.isVerified(),
      };
    };
    const status = until
      ? await waitFor(
          async () => {
            const s = await read();
            return Object.entries(until).every(([k, v]) => s[k] === v) ? s : null;
          },
          timeoutMs,
          `${userId}'s verification status to match ${JSON.stringify(until)}`,
        )
      : await read();
    return { ...status, masterKey: await serverMasterKey(userId) };
  },

  // {userId} -> {}: accept (pin) the user's current identity, clearing needsUserApproval.
  async pin_identity({ userId }) {
    await requireClient().getCrypto().pinCurrentUserIdentity(userId);
    return {};
  },

  // {mode: "all" | "only_signed", errorOnVerifiedUserProblems = false} -> {mode}. "all": room keys go
  // to every device (AllDevicesIsolationMode); "only_signed": only to devices cross-signed by their
  // owner, others get m.room_key.withheld m.unverified, and events from them fail with
  // UNSIGNED_SENDER_DEVICE (OnlySignedDevicesIsolationMode, MSC4153).
  async set_isolation({ mode, errorOnVerifiedUserProblems = false }) {
    const crypto = requireClient().getCrypto();
    if (mode === "all") crypto.setDeviceIsolationMode(new AllDevicesIsolationMode(Boolean(errorOnVerifiedUserProblems)));
    else if (mode === "only_signed") crypto.setDeviceIsolationMode(new OnlySignedDevicesIsolationMode());
    else throw new Error(`unknown isolation mode ${JSON.stringify(mode)}`);
    return { mode };
  },

  // {roomId, eventId?, sender?, codes?: [code], timeoutMs} -> described event. Waits until the event
  // (by id, or the newest encrypted event from `sender`) has settled as a decryption failure, and, if
  // `codes` is given, until its DecryptionFailureCode is one of them (a withheld notice can arrive after
  // the event first failed as MEGOLM_UNKNOWN_INBOUND_SESSION_ID; the SDK then re-decrypts). Fails if the
  // event decrypts instead.
  async wait_for_undecryptable({ roomId, eventId, sender, codes, timeoutMs = 30000 }) {
    requireClient();
    need(eventId || sender, "wait_for_undecryptable needs eventId or sender");
    const ev = await waitFor(
      () => {
        const room = client.getRoom(roomId);
        if (!room) return null;
        let e;
        if (eventId) e = findEvent(room, eventId);
        else e = timelineEvents(room).filter((x) => x.isEncrypted() && x.getSender() === sender).at(-1);
        if (!e || !isSettled(e)) return null;
        if (!e.isDecryptionFailure()) {
          if (e.isEncrypted() && e.getClearContent() !== null)
            throw new Error(`event ${e.getId()} was decrypted, not withheld or refused`);
          return null;
        }
        return !codes || codes.includes(String(e.decryptionFailureReason)) ? e : null;
      },
      timeoutMs,
      `an undecryptable event in ${roomId}${eventId ? ` (${eventId})` : ""}${codes ? ` with ${codes.join("|")}` : ""}`,
    );
    return describeWithTrust(ev);
  },

  async stop() {
    if (client) {
      client.stopClient();
      await client.getCrypto()?.stop?.();
    }
    client = null;
    setImmediate(() => process.exit(0));
    return {};
  },
};

// ---- main loop -----------------------------------------------------------------------------------------
async function handle(line) {
  let req;
  try {
    req = JSON.parse(line);
  } catch {
    emit({ id: null, ok: false, error: "request is not JSON" });
    return;
  }
  const { id, cmd, ...args } = req;
  const fn = Object.hasOwn(COMMANDS, cmd) ? COMMANDS[cmd] : null;
  if (!fn) {
    emit({ id, ok: false, error: `unknown command ${JSON.stringify(cmd)}` });
    return;
  }
  const started = Date.now();
  try {
    const result = await fn(args);
    emit({ id, ok: true, result, ms: Date.now() - started });
  } catch (e) {
    const detail = e?.errcode ? `${e.errcode}: ${e.data?.error ?? e.message}` : (e?.message ?? String(e));
    log.warn(`${cmd} failed: ${detail}`);
    emit({ id, ok: false, error: `${cmd}: ${detail}`, ms: Date.now() - started });
  }
}

process.on("unhandledRejection", (e) => log.error(`unhandled rejection: ${e?.stack ?? e}`));
const rl = createInterface({ input: process.stdin });
rl.on("line", (line) => {
  if (line.trim()) handle(line);
});
rl.on("close", () => {
  // stdin closed: the test harness is gone, so stop.
  if (client) client.stopClient();
  process.exit(0);
});
emit({ event: "ready", node: process.version });
