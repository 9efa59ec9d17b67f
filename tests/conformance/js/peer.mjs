// A browser-side tresen peer for conformance tests: Matrix's official crypto engine
// (OlmMachine from @matrix-org/matrix-sdk-crypto-wasm) driven over JSON lines.
//
// stdin:  {"cmd": ..., ...args}        stdout: {"result": ...} or {"error": "..."}
// While a command runs, the engine's outgoing HTTP requests (keys upload/query/claim,
// to-device sends) are forwarded to the test as {"request": {"type", "body", "event_type"}}
// and the test answers each with one line {"response": <Matrix response body>}: the Python
// test plays the server, exactly as the relay's Matrix-shaped key directory would.
import * as readline from "node:readline";
import * as sdk from "@matrix-org/matrix-sdk-crypto-wasm";

const lines = readline.createInterface({ input: process.stdin });
const queue = [];
let waiting = null;
lines.on("line", (line) => {
  if (waiting) {
    const w = waiting;
    waiting = null;
    w(line);
  } else queue.push(line);
});
const nextLine = () =>
  queue.length ? Promise.resolve(queue.shift()) : new Promise((r) => (waiting = r));
const send = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");

let machine = null;
let me = null;

async function ask(type, body, eventType) {
  send({ request: { type, body: JSON.parse(body), event_type: eventType ?? null } });
  const answer = JSON.parse(await nextLine());
  return JSON.stringify(answer.response);
}

async function flush() {
  for (const request of await machine.outgoingRequests()) {
    const response = await ask(request.type, request.body, request.event_type);
    await machine.markRequestAsSent(request.id, request.type, response);
  }
}

async function toDevice(requests) {
  // ToDeviceRequests for us to hand to the test (it delivers them to the Python device)
  const out = [];
  for (const request of requests) {
    const response = await ask(request.type, request.body, request.event_type);
    await machine.markRequestAsSent(request.id, request.type, response);
    out.push(request.event_type);
  }
  return out;
}

const commands = {
  async init({ user, device }) {
    await sdk.initAsync();
    me = user;
    machine = await sdk.OlmMachine.initialize(new sdk.UserId(user), new sdk.DeviceId(device));
    await flush();
    const keys = machine.identityKeys;
    return { curve25519: keys.curve25519.toBase64(), ed25519: keys.ed25519.toBase64() };
  },
  async track({ user }) {
    await machine.updateTrackedUsers([new sdk.UserId(user)]);
    await flush();
    const claim = await machine.getMissingSessions([new sdk.UserId(user)]);
    if (claim) {
      const response = await ask(claim.type, claim.body);
      await machine.markRequestAsSent(claim.id, claim.type, response);
    }
    const devices = await machine.getUserDevices(new sdk.UserId(user));
    return { devices: devices.devices().map((d) => d.deviceId.toString()) };
  },
  async encrypt_to_device({ user, device, type, content }) {
    const target = await machine.getDevice(new sdk.UserId(user), new sdk.DeviceId(device));
    if (!target) throw new Error(`unknown device ${user}/${device}`);
    return { content: JSON.parse(await target.encryptToDeviceEvent(type, content)) };
  },
  async receive_to_device({ events }) {
    const processed = await machine.receiveSyncChanges(
      JSON.stringify(events),
      new sdk.DeviceLists(),
      new Map([["signed_curve25519", 50]]),
      new Set(["signed_curve25519"]),
      new sdk.DecryptionSettings(sdk.TrustRequirement.Untrusted),
    );
    await flush();
    return {
      events: processed.map((e) => ({
        kind: ["decrypted", "undecryptable", "plaintext", "invalid"][e.type],
        event: JSON.parse(e.rawEvent),
        utd: e.utdInfo ? String(e.utdInfo.reason ?? e.utdInfo) : null,
      })),
    };
  },
  async share_room_key({ room, users }) {
    const requests = await machine.shareRoomKey(
      new sdk.RoomId(room),
      users.map((u) => new sdk.UserId(u)),
      new sdk.EncryptionSettings(),
    );
    return { types: await toDevice(requests) };
  },
  async encrypt_room_event({ room, type, content }) {
    const encrypted = await machine.encryptRoomEvent(
      new sdk.RoomId(room),
      type,
      JSON.stringify(content),
    );
    return { content: JSON.parse(encrypted) };
  },
  async decrypt_room_event({ room, sender, content, event_id }) {
    const event = {
      type: "m.room.encrypted",
      event_id,
      sender,
      room_id: room,
      origin_server_ts: Date.now(),
      content,
    };
    try {
      const decrypted = await machine.decryptRoomEvent(
        JSON.stringify(event),
        new sdk.RoomId(room),
        new sdk.DecryptionSettings(sdk.TrustRequirement.Untrusted),
      );
      return {
        event: JSON.parse(decrypted.event),
        sender_curve25519: decrypted.senderCurve25519Key,
        shield: decrypted.shieldState(false).message ?? null,
      };
    } catch (e) {
      return { error: String(e.message ?? e) };
    }
  },
  async attachment_encrypt({ data }) {
    const encrypted = sdk.Attachment.encrypt(Buffer.from(data, "base64"));
    return {
      ciphertext: Buffer.from(encrypted.encryptedData).toString("base64"),
      info: JSON.parse(encrypted.mediaEncryptionInfo),
    };
  },
  async attachment_decrypt({ ciphertext, info }) {
    const attachment = new sdk.EncryptedAttachment(
      Buffer.from(ciphertext, "base64"),
      JSON.stringify(info),
    );
    try {
      return { data: Buffer.from(sdk.Attachment.decrypt(attachment)).toString("base64") };
    } catch (e) {
      return { error: String(e.message ?? e) };
    }
  },
  async versions() {
    await sdk.initAsync();
    const v = sdk.getVersions();
    return { vodozemac: v.vodozemac, matrix_sdk_crypto: v.matrix_sdk_crypto };
  },
};

for (;;) {
  const line = await nextLine();
  const { cmd, ...args } = JSON.parse(line);
  if (cmd === "exit") break;
  try {
    send({ result: await commands[cmd](args) });
  } catch (e) {
    send({ error: `${cmd}: ${e?.stack ?? e}` });
  }
}
lines.close();
