// The pages' scripts, served from the broker's origin: the Content-Security-Policy allows no
// inline script, so nothing injected into a page could run. Each part acts only on the page
// whose elements it finds.
'use strict';

// Workspace tokens: copy the two export lines of a token just created.
(() => {
  const button = document.getElementById('copy-exports');
  if (!button || !navigator.clipboard) return;
  button.hidden = false;
  button.addEventListener('click', async () => {
    const status = document.getElementById('copy-status');
    try {
      await navigator.clipboard.writeText(document.getElementById('exports').textContent);
      status.textContent = 'Copied. Paste them into the workspace.';
    } catch (e) {
      status.textContent = 'Copying was refused by the browser; select the lines instead.';
    }
  });
})();

// Git SSH key: copy the public key.
(() => {
  const button = document.getElementById('copy-public-key');
  if (!button || !navigator.clipboard) return;
  button.hidden = false;
  button.addEventListener('click', async () => {
    const status = document.getElementById('copy-public-key-status');
    try {
      await navigator.clipboard.writeText(document.getElementById('public-key').textContent.trim());
      status.textContent = 'Copied. Paste it at your forge.';
    } catch (e) {
      status.textContent = 'Copying was refused by the browser; select the key instead.';
    }
  });
})();

// Device-code linking: ask for a code, show it, poll until the provider says yes.
(() => {
  const box = document.getElementById('device');
  if (!box) return;
  const api = box.dataset.base + 'api/v2/external-auth/' + encodeURIComponent(box.dataset.id) + '/device';
  const say = (id, text) => { document.getElementById(id).textContent = text; };
  const messages = {
    expired_token: 'The code has expired. Reload the page to get a new one.',
    access_denied: 'Access was denied at the provider.',
  };
  const wait = ms => new Promise(r => setTimeout(r, ms));
  // Only http(s) links are followed: a provider's answer must not turn into a javascript: URL.
  const web = link => { try { const u = new URL(link); return /^https?:$/.test(u.protocol) ? u.href : null; } catch (e) { return null; } };
  async function run() {
    const started = await fetch(api, { credentials: 'same-origin' });
    const flow = await started.json();
    if (!started.ok) { say('step', flow.message + (flow.detail ? ' ' + flow.detail : '')); return; }
    say('step', 'Enter this code at the provider:');
    say('user-code', flow.user_code);
    const target = web(flow.verification_uri_complete || flow.verification_uri);
    const verify = document.getElementById('verify');
    if (target) { verify.href = target; verify.hidden = false; }
    const copy = document.getElementById('copy'); copy.hidden = false;
    copy.addEventListener('click', async () => { await navigator.clipboard.writeText(flow.user_code); say('status', 'Code copied.'); });
    let interval = (flow.interval || 5) * 1000;
    const deadline = Date.now() + flow.expires_in * 1000;
    while (Date.now() < deadline) {
      await wait(interval);
      const poll = await fetch(api, { method: 'POST', credentials: 'same-origin',
        headers: { 'Content-Type': 'application/json', 'X-CSRF-Token': box.dataset.csrf },
        body: JSON.stringify({ device_code: flow.device_code }) });
      if (poll.status === 204) { say('status', 'Connected. Taking you back…'); location.href = box.dataset.next; return; }
      const body = await poll.json();
      if (body.detail === 'slow_down') { interval += 5000; continue; }
      if (body.detail === 'authorization_pending') { say('status', 'Waiting for you to enter the code…'); continue; }
      say('status', messages[body.detail] || (body.message + ' ' + (body.detail || ''))); return;
    }
    say('status', messages.expired_token);
  }
  run().catch(e => say('status', 'Something went wrong: ' + e));
})();
