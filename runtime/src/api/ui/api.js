// pinion console: the API client, the live event stream and DOM helpers.
//
// Every request goes to the public HTTP API (the same endpoints as `pinion --server`)
// with the token from sessionStorage as `Authorization: Bearer`. No cookies are used
// (`credentials: 'omit'`), so another site cannot make the browser send an authenticated
// request: the console has nothing for CSRF to ride on.
'use strict';

const Pinion = (() => {
  const KEY = 'pinion.token';

  class ApiError extends Error {
    constructor(status, code, message, details) {
      super(message);
      this.status = status;
      this.code = code;
      this.details = details;
    }
  }

  const session = {
    token: () => sessionStorage.getItem(KEY),
    // '' means "no token" (a server run with --no-auth); null means "not signed in".
    signedIn: () => sessionStorage.getItem(KEY) !== null,
    signIn: (token) => sessionStorage.setItem(KEY, token),
    signOut: () => sessionStorage.removeItem(KEY),
  };

  function headers(extra) {
    const h = Object.assign({}, extra || {});
    const t = session.token();
    if (t) h.Authorization = 'Bearer ' + t;
    return h;
  }

  // `?a=1&b=2` from an object, leaving out empty values; arrays repeat the key.
  function query(params) {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(params || {})) {
      if (v === undefined || v === null || v === '') continue;
      for (const one of Array.isArray(v) ? v : [v]) q.append(k, String(one));
    }
    const s = q.toString();
    return s ? '?' + s : '';
  }

  let onUnauthorized = () => {};

  // One API call. `body`: undefined, a Blob/File (sent raw) or a value (sent as JSON).
  async function call(method, path, body) {
    const init = { method, headers: headers(), credentials: 'omit', cache: 'no-store' };
    if (body instanceof Blob) {
      init.body = body;
      init.headers['Content-Type'] = 'application/octet-stream';
    } else if (body !== undefined) {
      init.body = JSON.stringify(body);
      init.headers['Content-Type'] = 'application/json';
    }
    let res;
    try {
      res = await fetch(path, init);
    } catch (e) {
      throw new ApiError(0, 'unavailable', 'cannot reach the server: ' + e.message);
    }
    const text = await res.text();
    let doc = null;
    try {
      doc = text ? JSON.parse(text) : null;
    } catch (_) {
      doc = null;
    }
    if (!res.ok) {
      const e = (doc && doc.error) || {};
      const err = new ApiError(res.status, e.code || 'http_' + res.status,
        e.message || text || res.statusText, e.details);
      if (res.status === 401) onUnauthorized(err);
      throw err;
    }
    return doc;
  }

  const get = (path, params) => call('GET', path + query(params));
  const post = (path, body, params) => call('POST', path + query(params), body);
  const seg = encodeURIComponent;

  // ---- Server-Sent Events over fetch ---------------------------------------------------
  // EventSource cannot send an Authorization header, so the stream is read with fetch and
  // a streaming body reader; frames are parsed here, and a dropped connection resumes
  // after the last id received.

  function parseFrame(frame) {
    let id = null;
    const data = [];
    for (const line of frame.split('\n')) {
      if (line === '' || line.startsWith(':')) continue;
      const colon = line.indexOf(':');
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? '' : line.slice(colon + 1);
      if (value.startsWith(' ')) value = value.slice(1);
      if (field === 'id') id = Number(value);
      else if (field === 'data') data.push(value);
    }
    if (id === null || data.length === 0) return null;
    try {
      return { id, event: JSON.parse(data.join('\n')) };
    } catch (_) {
      return null;
    }
  }

  // Whether an event with an id above `after` exists: one short, indexed request.
  async function eventAfter(after) {
    const res = await fetch('/v1/events' + query({ after, limit: 1, follow: 'false' }),
      { headers: headers(), credentials: 'omit', cache: 'no-store' });
    if (res.status === 401) onUnauthorized();
    if (!res.ok) throw new ApiError(res.status, 'http_' + res.status, 'events: HTTP ' + res.status);
    return /^id:/m.test(await res.text());
  }

  // The newest event's id, without reading the events before it (a database may hold
  // millions): gallop up, then bisect, each step asking whether any event follows an id.
  async function eventHead() {
    if (!(await eventAfter(0))) return 0;
    let lo = 0; // an event follows lo
    let hi = 1;
    while (await eventAfter(hi)) {
      lo = hi;
      hi *= 2;
    }
    while (hi - lo > 1) {
      const mid = Math.floor((lo + hi) / 2);
      if (await eventAfter(mid)) lo = mid;
      else hi = mid;
    }
    return hi;
  }

  // Follows the stream from `after`, calling onEvent(lifecycleEvent) for each and
  // onState('live' | 'reconnecting' | 'offline'). Returns { stop }.
  function follow(after, onEvent, onState) {
    let last = after;
    let stopped = false;
    let ctrl = null;
    let delay = 500;
    async function once() {
      ctrl = new AbortController();
      const res = await fetch('/v1/events' + query({ after: last }), {
        headers: headers({ Accept: 'text/event-stream' }),
        credentials: 'omit', cache: 'no-store', signal: ctrl.signal,
      });
      if (res.status === 401) {
        stopped = true;
        onUnauthorized();
        return;
      }
      if (!res.ok || !res.body) throw new Error('events: HTTP ' + res.status);
      onState('live');
      delay = 500;
      const reader = res.body.getReader();
      const decoder = new TextDecoder();
      let buf = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        buf += decoder.decode(value, { stream: true }).replace(/\r\n?/g, '\n');
        let end;
        while ((end = buf.indexOf('\n\n')) >= 0) {
          const frame = parseFrame(buf.slice(0, end));
          buf = buf.slice(end + 2);
          if (frame) {
            last = frame.id;
            onEvent(frame.event);
          }
        }
      }
    }
    (async () => {
      while (!stopped) {
        try {
          await once();
        } catch (_) {
          // A dropped connection or a restarting server: retry below.
        }
        if (stopped) break;
        onState('reconnecting');
        await new Promise((r) => setTimeout(r, delay));
        delay = Math.min(delay * 2, 10000);
      }
      onState('offline');
    })();
    return {
      stop() {
        stopped = true;
        if (ctrl) ctrl.abort();
      },
    };
  }

  return {
    ApiError, session, call, get, post, query, seg, eventHead, follow,
    setUnauthorizedHandler(f) { onUnauthorized = f; },
  };
})();

// ---- DOM helpers: data only ever enters the page as text --------------------------------

// h('a', {href: '#/x', className: 'y'}, 'text', child, [more]) builds an element. Strings
// become text nodes, so nothing rendered from data is ever parsed as HTML.
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'className') el.className = v;
    else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'value') el.value = v;
    else if (k === 'checked' || k === 'disabled' || k === 'hidden' || k === 'selected') el[k] = true;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  const add = (c) => {
    if (c === undefined || c === null || c === false) return;
    if (Array.isArray(c)) c.forEach(add);
    else el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  };
  children.forEach(add);
  return el;
}

const fmt = {
  time(ms) {
    if (ms === null || ms === undefined) return '';
    const d = new Date(ms);
    const pad = (n, w) => String(n).padStart(w || 2, '0');
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
      `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
  },
  duration(ms) {
    if (ms < 1000) return ms + ' ms';
    if (ms < 60000) return (ms / 1000).toFixed(ms < 10000 ? 2 : 1) + ' s';
    if (ms < 3600000) return (ms / 60000).toFixed(1) + ' min';
    return (ms / 3600000).toFixed(1) + ' h';
  },
  short: (hash) => (hash ? String(hash).slice(0, 12) : ''),
  json(v, max) {
    let s;
    try {
      s = JSON.stringify(v);
    } catch (_) {
      s = String(v);
    }
    if (s === undefined) s = 'null';
    return max && s.length > max ? s.slice(0, max) + '…' : s;
  },
  pretty: (v) => JSON.stringify(v, null, 2),
};

function statusBadge(status, id) {
  return h('span', { className: 'status ' + status, id }, status);
}

// Parses JSON typed by the user; empty means null.
function parseJsonInput(text, what) {
  if (!text.trim()) return null;
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new Error(what + ' is not JSON: ' + e.message);
  }
}
