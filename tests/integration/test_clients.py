"""The official clients through the proxy: Claude Code (@anthropic-ai/claude-code
2.1.197, a native binary) and the TypeScript SDK (@anthropic-ai/sdk 1.x), against
the fake upstream, with every client-side retry turned off so that a proxy failure
cannot hide behind a retry.  Each runs without and with server.access_key_env
(the client then sends the access key as its API key).

The npm packages are installed once into build/node (the npm registry must be
reachable); without npm or the registry these tests are skipped, loudly.
"""

import json
import os
import subprocess
import time
import unittest

from harness import REPO_ROOT, ZephyrTestCase, npm_ensure, stats_header

NODE_DIR = os.path.join(REPO_ROOT, "build", "node")
CLAUDE_PKG = "@anthropic-ai/claude-code@2.1.197"
SDK_PKG = "@anthropic-ai/sdk@1"
TOKEN = "sk-zt-group-token-0123456789"
ACCESS_KEY = "zk-zt-access-key-9876543210abcdef"


def access_server(access_key):
    """The [server] keys and proxy environment for an access key, or none."""
    if not access_key:
        return None, None
    return {"access_key_env": "ZT_ACCESS"}, {"ZT_ACCESS": access_key}



def _ensure_packages():
    """Installs the clients once; returns None or the reason they are missing."""
    claude = os.path.join(NODE_DIR, "node_modules", ".bin", "claude")
    sdk = os.path.join(NODE_DIR, "node_modules", "@anthropic-ai", "sdk", "package.json")
    return npm_ensure(NODE_DIR, [CLAUDE_PKG, SDK_PKG], [claude, sdk])


def _skip_loudly(reason):
    print("\n!!! SKIPPED real-client test: %s\n" % reason, flush=True)
    raise unittest.SkipTest(reason)


SDK_SCRIPT = r"""
const Anthropic = require(process.env.SDK_PATH);
const client = new Anthropic({ baseURL: process.env.BASE_URL, apiKey: process.env.CLIENT_KEY,
                               maxRetries: 0, timeout: 20000 });
(async () => {
  const out = {};
  const msg = await client.messages.create({ model: 'claude-zt', max_tokens: 16,
                                             messages: [{ role: 'user', content: 'hi' }] });
  out.text = msg.content[0].text;
  out.usage = msg.usage;
  const t0 = Date.now();
  const times = [];
  let streamed = '';
  const stream = client.messages.stream({ model: 'claude-zt', max_tokens: 16,
                                          messages: [{ role: 'user', content: 'hi' }] });
  stream.on('text', (t) => { times.push(Date.now() - t0); streamed += t; });
  const final = await stream.finalMessage();
  out.streamed = streamed;
  out.times = times;
  out.final_output_tokens = final.usage.output_tokens;
  console.log(JSON.stringify(out));
})().catch((e) => { console.error('SDK ERROR', e && e.message); process.exit(3); });
"""


class RealClients(ZephyrTestCase):

    def setUp(self):
        super().setUp()
        reason = _ensure_packages()
        if reason:
            _skip_loudly(reason)

    def test_claude_code_print_mode(self):
        self.run_claude_code(access_key=None)

    def test_claude_code_with_access_key(self):
        """server.access_key_env set: Claude Code sends the key as its API key,
        and the proxy swaps it for the group's token."""
        self.run_claude_code(access_key=ACCESS_KEY)

    def run_claude_code(self, access_key):
        fake = self.start_fake()
        server, penv = access_server(access_key)
        p = self.proxy_for(fake, token=TOKEN, server=server, env=penv)
        client_key = access_key or "client-side-key"
        home = os.path.join(self.tmp, "home")
        os.makedirs(home, exist_ok=True)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": home,
               "ANTHROPIC_BASE_URL": "http://127.0.0.1:%d" % p.port,
               "ANTHROPIC_API_KEY": client_key,
               "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
               "CLAUDE_CODE_MAX_RETRIES": "0",
               "CLAUDE_CODE_DISABLE_NONSTREAMING_FALLBACK": "1"}
        fake.reset()
        r = subprocess.run([os.path.join(NODE_DIR, "node_modules", ".bin", "claude"), "-p", "hi"],
                           env=env, capture_output=True, text=True, timeout=90)
        self.assertEqual(r.returncode, 0, "claude -p failed: %s %s" % (r.stdout, r.stderr[-2000:]))
        self.assertIn("w0 w1 w2", r.stdout)
        st = fake.stats()
        # The streaming POST carried the big system prompt and the group's
        # token, never the client's key.
        self.assertIn("/v1/messages", st["last_path"])
        self.assertGreater(st["last_body_bytes"], 20000)
        self.assertEqual(stats_header(st, "x-api-key"), [TOKEN])
        self.assertNotIn(client_key, json.dumps(st["last_headers"]))
        self.assertGreaterEqual(st["streams_completed"], 1)
        if not access_key:
            # Its connectivity probe (HEAD / without credentials) goes upstream;
            # with an access key the proxy answers it with 401 and Claude Code
            # carries on, as the run above shows.
            self.assertIn("HEAD /", p.stderr_text())

    def test_sdk_create_and_stream(self):
        self.run_sdk(access_key=None)

    def test_sdk_with_access_key(self):
        """server.access_key_env set: the SDK sends the key as its apiKey."""
        self.run_sdk(access_key=ACCESS_KEY)

    def run_sdk(self, access_key):
        fake = self.start_fake(events=5, gap_ms=150)
        server, penv = access_server(access_key)
        p = self.proxy_for(fake, token=TOKEN, server=server, env=penv)
        script = os.path.join(self.tmp, "sdk.js")
        with open(script, "w") as f:
            f.write(SDK_SCRIPT)
        env = dict(os.environ, SDK_PATH=os.path.join(NODE_DIR, "node_modules", "@anthropic-ai", "sdk"),
                   BASE_URL="http://127.0.0.1:%d" % p.port,
                   CLIENT_KEY=access_key or "client-side-key")
        r = subprocess.run(["node", script], env=env, capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, "SDK script failed: %s %s" % (r.stdout, r.stderr[-2000:]))
        out = json.loads(r.stdout.strip().splitlines()[-1])
        self.assertEqual(out["text"], "w0 w1 w2 w3 w4 ")
        self.assertEqual(out["streamed"], "w0 w1 w2 w3 w4 ")
        self.assertEqual(out["final_output_tokens"], 5)
        # Streamed text arrives at the upstream's cadence, not all at the end.
        times = out["times"]
        self.assertEqual(len(times), 5)
        self.assertGreater(times[-1] - times[0], 400, "deltas arrived together: %r" % times)
        st = fake.stats()
        self.assertEqual(stats_header(st, "x-api-key"), [TOKEN])
        self.assertEqual(stats_header(st, "authorization"), [],
                         "the SDK's Authorization: Bearer must not reach the upstream")
        if access_key:
            self.assertNotIn(access_key, json.dumps(st["last_headers"]))


if __name__ == "__main__":
    unittest.main()
