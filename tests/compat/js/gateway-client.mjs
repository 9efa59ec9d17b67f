// whatsapp-api-js against a tresen business gateway: sends what the Python test asks for
// (one JSON command per stdin line) and runs the library's own webhook handling (signature
// check on) on an HTTP server; every event is printed as one JSON line on stdout.
import http from "node:http";
import readline from "node:readline";
import { WhatsAppAPI } from "whatsapp-api-js";
import {
  Text, Location, Reaction, Image, Interactive, ActionButtons, Button, Body,
  Template, Language, BodyComponent, BodyParameter, Currency, DateTime,
} from "whatsapp-api-js/messages";

const [gateway, token, appSecret, verifyToken] = process.argv.slice(2);
const out = (o) => process.stdout.write(JSON.stringify(o) + "\n");

const api = new WhatsAppAPI({
  token, appSecret, webhookVerifyToken: verifyToken, v: "v24.0",
  ponyfill: {
    fetch: (url, init) => fetch(String(url).replace("https://graph.facebook.com", gateway), init),
  },
});
api.on.message = ({ message, contact }) => out({ event: "message", message, contact });
api.on.status = ({ id, status, error }) => out({ event: "status", id, status, error });

const server = http.createServer(async (req, res) => {
  const url = new URL(req.url, "http://localhost");
  if (req.method === "GET") {
    try {
      const challenge = api.get(Object.fromEntries(url.searchParams));
      res.writeHead(200).end(challenge);
    } catch (e) {
      res.writeHead(e.httpStatus ?? 403).end(String(e));
    }
    return;
  }
  const chunks = [];
  for await (const c of req) chunks.push(c);
  const raw = Buffer.concat(chunks).toString("utf8");
  try {
    const data = JSON.parse(raw);
    const field = data.entry?.[0]?.changes?.[0]?.field;
    if (field === "messages") {
      await api.post(data, raw, req.headers["x-hub-signature-256"]);
    } else {
      // whatsapp-api-js 6 reads value.metadata of every event before it looks at the field, so
      // it throws on Meta's own template and quality updates (they carry no metadata): check
      // their signature with the library and report them as they are
      const signature = req.headers["x-hub-signature-256"] ?? "";
      if (!(await api.verifyRequestSignature(raw, signature))) throw new Error("bad signature");
      out({ event: "other", field });
    }
    res.writeHead(200).end();
  } catch (e) {
    out({ event: "rejected", error: String(e) });
    res.writeHead(e.httpStatus ?? 500).end();
  }
});

const build = {
  text: (c) => new Text(c.body),
  location: (c) => new Location(c.longitude, c.latitude, c.name, c.address),
  reaction: (c) => new Reaction(c.message_id, c.emoji),
  image: (c) => new Image(c.link, false, c.caption),
  buttons: (c) => new Interactive(
    new ActionButtons(...c.buttons.map(([id, title]) => new Button(id, title))), new Body(c.body)),
  template: (c) => new Template(c.name, new Language(c.language),
    new BodyComponent(...c.params.map((p) =>
      new BodyParameter(
        p.currency ? new Currency(p.currency[0], p.currency[1], p.currency[2])
          : p.date_time ? new DateTime(p.date_time) : p.text)))),
};

server.listen(0, "127.0.0.1", () => out({ event: "ready", port: server.address().port }));
for await (const line of readline.createInterface({ input: process.stdin })) {
  const c = JSON.parse(line);
  try {
    let body;
    if (c.op === "read") body = await api.markAsRead(c.phone_id, c.message_id);
    else body = await api.sendMessage(c.phone_id, c.to, build[c.op](c), c.context);
    out({ event: "result", n: c.n, body });
  } catch (e) {
    out({ event: "result", n: c.n, error: String(e) });
  }
}
server.close();
