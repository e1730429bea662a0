// pinion console: sign-in, the hash router, live updates and the confirmation dialog.
//
// Pages are addressed by the URL's fragment (#/instances, #/instances/ID, #/modules,
// #/replay), so the server serves one page and a reload or a shared link opens the
// same view. Each view is a function (root, route) that renders into root and may return
// { onEvent(lifecycleEvent) } to hear about new events while it is shown.
'use strict';

const App = (() => {
  const main = () => document.getElementById('main');
  let view = null; // what the current view returned
  let stream = null;
  let generation = 0; // bumps on every navigation: stale async renders check it

  function parseRoute() {
    const raw = location.hash.replace(/^#/, '') || '/instances';
    const [path, q] = raw.split('?');
    const parts = path.split('/').filter(Boolean).map(decodeURIComponent);
    return { parts, params: new URLSearchParams(q || '') };
  }

  function go(hash) {
    if (location.hash === hash) render();
    else location.hash = hash;
  }

  // ---- sign-in --------------------------------------------------------------------------

  function showLogin(message) {
    if (stream) stream.stop();
    stream = null;
    document.getElementById('nav').hidden = true;
    document.getElementById('logout').hidden = true;
    document.getElementById('live').hidden = true;
    const token = h('input', { id: 'token', type: 'password', autocomplete: 'off', placeholder: 'bearer token' });
    const error = h('p', { id: 'login-error', className: 'error' }, message || '');
    const attempt = async (value) => {
      Pinion.session.signIn(value);
      try {
        // Any authenticated read will do: it proves the token (or that none is needed).
        await Pinion.get('/v1/instances', { limit: 1 });
      } catch (e) {
        Pinion.session.signOut();
        error.textContent = e.status === 401
          ? (value ? 'The server refused this token.' : 'This server needs a token.')
          : e.message;
        return;
      }
      start();
    };
    const form = h('form', {
      id: 'login-form', className: 'card login',
      onsubmit: (e) => { e.preventDefault(); attempt(token.value.trim()); },
    },
    h('h1', {}, 'Sign in to pinion'),
    h('p', { className: 'muted' },
      'The token is the contents of the server\'s --token-file (or one of --tokens-file). ' +
      'It stays in this tab\'s session storage and is sent only to this server.'),
    h('label', {}, 'Token', token),
    h('p', {}, ''),
    h('div', { className: 'buttons' },
      h('button', { id: 'login-anon', type: 'button', onclick: () => attempt('') }, 'Continue without token'),
      h('button', { id: 'login-submit', type: 'submit', className: 'primary' }, 'Sign in')),
    error);
    main().replaceChildren(form);
    token.focus();
  }

  // ---- live updates ---------------------------------------------------------------------

  function setLive(state) {
    const el = document.getElementById('live');
    el.textContent = state;
    el.className = 'live' + (state === 'live' ? ' on' : '');
  }

  async function startStream() {
    setLive('connecting');
    let head;
    try {
      head = await Pinion.eventHead();
    } catch (_) {
      setLive('offline');
      return;
    }
    stream = Pinion.follow(head, (ev) => {
      if (view && view.onEvent) view.onEvent(ev);
    }, setLive);
  }

  // ---- routing --------------------------------------------------------------------------

  function render() {
    if (!Pinion.session.signedIn()) {
      showLogin();
      return;
    }
    generation += 1;
    const route = parseRoute();
    const page = route.parts[0] || 'instances';
    for (const a of document.querySelectorAll('#nav a')) {
      a.classList.toggle('active', a.dataset.nav === page);
    }
    const root = h('div', { id: 'page-' + page });
    main().replaceChildren(root);
    const views = {
      instances: route.parts.length > 1 ? Views.instance : Views.instances,
      modules: Views.modules,
      replay: Views.replay,
    };
    const f = views[page];
    view = f ? f(root, route, generation) : null;
    if (!f) root.append(h('p', { className: 'error' }, 'No such page.'));
  }

  function start() {
    document.getElementById('nav').hidden = false;
    document.getElementById('logout').hidden = false;
    document.getElementById('live').hidden = false;
    if (!stream) startStream();
    render();
  }

  // ---- confirmation ---------------------------------------------------------------------

  // Resolves true when the user confirms `text`, false when they go back.
  function confirm(text) {
    const modal = document.getElementById('confirm');
    document.getElementById('confirm-text').textContent = text;
    modal.hidden = false;
    return new Promise((resolve) => {
      const ok = document.getElementById('confirm-ok');
      const back = document.getElementById('confirm-back');
      const done = (answer) => {
        modal.hidden = true;
        ok.onclick = null;
        back.onclick = null;
        resolve(answer);
      };
      ok.onclick = () => done(true);
      back.onclick = () => done(false);
      ok.focus();
    });
  }

  function init() {
    Pinion.setUnauthorizedHandler(() => {
      Pinion.session.signOut();
      showLogin('The server refused the token; sign in again.');
    });
    document.getElementById('logout').addEventListener('click', () => {
      Pinion.session.signOut();
      showLogin();
    });
    window.addEventListener('hashchange', () => {
      if (Pinion.session.signedIn()) render();
    });
    if (Pinion.session.signedIn()) start();
    else showLogin();
  }

  return { init, go, confirm, current: () => generation };
})();

document.addEventListener('DOMContentLoaded', App.init);
