// pinion console: the instances list, modules and aliases, and replay pages.
//
// Each view renders into the element it is given and returns { onEvent } for live
// updates. The instances page reads one page of `GET /v1/instances` at a time (keyset
// pagination), so it costs the same with ten instances or a million.
'use strict';

const Views = {};

// Calls f at most once per `ms`, trailing: a burst of events costs one refresh.
function throttle(f, ms) {
  let timer = null;
  let again = false;
  return () => {
    if (timer) {
      again = true;
      return;
    }
    f();
    timer = setTimeout(() => {
      timer = null;
      if (again) {
        again = false;
        f();
      }
    }, ms);
  };
}

function errorBox(e) {
  return h('p', { className: 'error' }, e.code ? `${e.code}: ${e.message}` : String(e.message || e));
}

const STATUSES = ['running', 'blocked', 'completed', 'failed', 'cancelled', 'terminated'];

// ---- instances ------------------------------------------------------------------------------

// Cursors of the pages before the current one, per filter, for "Previous".
const pageStack = { key: '', cursors: [] };

Views.instances = (root, route, gen) => {
  const p = route.params;
  const filters = {
    status: p.get('status') || '',
    workflow_type: p.get('workflow_type') || '',
    module: p.get('module') || '',
    limit: p.get('limit') || '50',
  };
  const cursor = p.get('cursor') || '';
  const key = JSON.stringify(filters);
  if (pageStack.key !== key || !cursor) {
    pageStack.key = key;
    pageStack.cursors = [];
  }
  const hashFor = (extra) => '#/instances' + Pinion.query(Object.assign({}, filters, extra));

  const status = h('select', { id: 'filter-status' }, h('option', { value: '' }, 'any status'),
    STATUSES.map((s) => h('option', { value: s, selected: s === filters.status }, s)));
  const type = h('input', { id: 'filter-type', value: filters.workflow_type, placeholder: 'e.g. Order' });
  const module = h('input', { id: 'filter-module', value: filters.module, placeholder: 'hash, prefix or alias' });
  const limit = h('select', { id: 'filter-limit' },
    ['25', '50', '100', '500'].map((n) => h('option', { value: n, selected: n === filters.limit }, n)));
  const filterForm = h('form', {
    id: 'filters', className: 'card row',
    onsubmit: (e) => {
      e.preventDefault();
      App.go('#/instances' + Pinion.query({
        status: status.value, workflow_type: type.value.trim(), module: module.value.trim(), limit: limit.value,
      }));
    },
  },
  h('label', {}, 'Status', status), h('label', {}, 'Workflow type', type),
  h('label', {}, 'Module', module), h('label', {}, 'Per page', limit),
  h('button', { type: 'submit', className: 'primary', id: 'filter-apply' }, 'Filter'));

  const notice = h('div', { id: 'instances-notice', className: 'notice', hidden: true });
  const body = h('div', { id: 'instances-body' }, h('p', { className: 'muted' }, 'Loading…'));
  root.append(h('h1', {}, 'Instances'), startForm(), filterForm, notice, body);

  async function load() {
    const t0 = performance.now();
    let page;
    try {
      page = await Pinion.get('/v1/instances', Object.assign({}, filters, { cursor }));
    } catch (e) {
      if (gen === App.current()) body.replaceChildren(errorBox(e));
      return;
    }
    if (gen !== App.current()) return;
    const t1 = performance.now();
    const rows = page.instances.map((i) => h('tr', { 'data-id': i.id },
      h('td', {}, h('a', { href: '#/instances/' + Pinion.seg(i.id) }, i.id)),
      h('td', {}, i.workflow_type),
      h('td', {}, statusBadge(i.status)),
      h('td', { className: 'mono', title: i.module_hash }, fmt.short(i.module_hash)),
      h('td', {}, i.run),
      h('td', {}, i.event_count),
      h('td', {}, fmt.time(i.created_at_ms)),
      h('td', {}, fmt.time(i.updated_at_ms))));
    const table = h('table', { id: 'instances-table' },
      h('thead', {}, h('tr', {}, ['id', 'type', 'status', 'module', 'run', 'events', 'created', 'updated']
        .map((c) => h('th', {}, c)))),
      h('tbody', {}, rows));
    const prev = h('button', {
      id: 'prev-page', type: 'button', disabled: !cursor,
      onclick: () => App.go(hashFor({ cursor: pageStack.cursors.pop() || '' })),
    }, '← Previous');
    const next = h('button', {
      id: 'next-page', type: 'button', disabled: !page.next_cursor,
      onclick: () => {
        pageStack.cursors.push(cursor);
        App.go(hashFor({ cursor: page.next_cursor }));
      },
    }, 'Next →');
    const timing = h('span', { id: 'list-timing', className: 'muted' });
    body.replaceChildren(
      rows.length ? table : h('p', { id: 'instances-empty', className: 'muted' }, 'No instances match.'),
      h('div', { className: 'pager' }, prev, next,
        h('span', { className: 'muted' }, `page ${pageStack.cursors.length + 1}, ${rows.length} shown`), timing));
    // Rendered: report the API call and the render separately.
    requestAnimationFrame(() => {
      timing.textContent = `· API ${Math.round(t1 - t0)} ms, render ${Math.round(performance.now() - t1)} ms`;
    });
  }
  load();

  let missed = 0;
  const refresh = throttle(load, 1000);
  return {
    onEvent() {
      // The first page follows new events; a later page would shift under the reader.
      if (!cursor) {
        refresh();
        return;
      }
      missed += 1;
      notice.hidden = false;
      notice.replaceChildren(`${missed} new lifecycle event${missed > 1 ? 's' : ''} since this page loaded. `,
        h('a', { href: hashFor({}) }, 'Back to the newest'));
    },
  };
};

// The form that starts an instance (POST /v1/instances).
function startForm() {
  const type = h('input', { id: 'start-type', placeholder: 'workflow type', required: true });
  const kind = h('select', { id: 'start-kind' }, h('option', { value: 'alias' }, 'alias'),
    h('option', { value: 'module' }, 'module'));
  const target = h('input', { id: 'start-target', placeholder: 'alias name or module hash', required: true });
  const input = h('textarea', { id: 'start-input', placeholder: 'input (JSON; empty means null)' });
  const id = h('input', { id: 'start-id', placeholder: 'optional' });
  const error = h('p', { id: 'start-error', className: 'error' });
  return h('details', { className: 'card', id: 'start' }, h('summary', {}, 'Start an instance'),
    h('form', {
      onsubmit: async (e) => {
        e.preventDefault();
        error.textContent = '';
        try {
          const body = { workflow_type: type.value.trim(), input: parseJsonInput(input.value, 'the input') };
          body[kind.value] = target.value.trim();
          if (id.value.trim()) body.id = id.value.trim();
          const started = await Pinion.post('/v1/instances', body);
          App.go('#/instances/' + Pinion.seg(started.id));
        } catch (err) {
          error.textContent = err.code ? `${err.code}: ${err.message}` : err.message;
        }
      },
    },
    h('div', { className: 'row' }, h('label', {}, 'Workflow type', type), h('label', {}, 'On', kind),
      h('label', {}, 'Alias or module', target), h('label', {}, 'Id', id)),
    h('label', {}, 'Input', input),
    h('button', { id: 'start-submit', type: 'submit', className: 'primary' }, 'Start'), error));
}

// ---- modules and aliases ----------------------------------------------------------------------

const MODULE_STATES = {
  current: 'an alias points at it',
  ramping: 'an alias ramps a share of new instances to it',
  draining: 'no alias targets it; running or blocked instances still pin it',
  drained: 'nothing uses it: pinion gc may collect it',
};

Views.modules = (root, route, gen) => {
  const body = h('div', {}, h('p', { className: 'muted' }, 'Loading…'));
  root.append(h('h1', {}, 'Modules and aliases'), body);
  async function load() {
    let modules;
    let aliases;
    let histories;
    try {
      [modules, aliases] = await Promise.all([Pinion.get('/v1/modules'), Pinion.get('/v1/aliases')]);
      histories = await Promise.all(aliases.aliases.map((a) =>
        Pinion.get('/v1/aliases/' + Pinion.seg(a.name) + '/history')));
    } catch (e) {
      if (gen === App.current()) body.replaceChildren(errorBox(e));
      return;
    }
    if (gen !== App.current()) return;
    const moduleRows = modules.modules.map((m) => h('tr', { 'data-hash': m.hash },
      h('td', { className: 'mono', title: m.hash }, fmt.short(m.hash)),
      h('td', {}, m.version_label || ''),
      h('td', { title: MODULE_STATES[m.status] || '' }, statusBadge(m.status)),
      h('td', {}, m.aliases.join(', ')),
      h('td', {}, m.ramping.map(([name, pct]) => `${pct}% of ${name}`).join(', ')),
      h('td', {}, h('a', { href: '#/instances' + Pinion.query({ module: m.hash, status: 'running' }) },
        `${m.instances.running} running`), `, ${m.instances.blocked} blocked, ${m.instances.completed} completed, ${m.instances.failed} failed`),
      h('td', {}, m.workflows.join(', ')),
      h('td', {}, m.activities.join(', ')),
      h('td', {}, fmt.time(m.deployed_at_ms))));
    const aliasCards = aliases.aliases.map((a, i) => h('div', { className: 'card', 'data-alias': a.name },
      h('h2', {}, 'alias ', h('code', {}, a.name)),
      h('dl', { className: 'facts' },
        h('dt', {}, 'module'), h('dd', { className: 'mono', title: a.module_hash }, fmt.short(a.module_hash)),
        h('dt', {}, 'ramp'), h('dd', {}, a.ramp
          ? `${a.ramp[1]}% of new instances to ${fmt.short(a.ramp[0])}, ${100 - a.ramp[1]}% to ${fmt.short(a.module_hash)}`
          : 'none: every new instance starts on the module'),
        h('dt', {}, 'updated'), h('dd', {}, fmt.time(a.updated_at_ms))),
      h('table', { className: 'alias-history' },
        h('thead', {}, h('tr', {}, ['when', 'action', 'module', 'ramp'].map((c) => h('th', {}, c)))),
        h('tbody', {}, histories[i].changes.slice().reverse().map((c) => h('tr', {},
          h('td', {}, fmt.time(c.at_ms)), h('td', {}, c.action),
          h('td', { className: 'mono', title: c.module_hash || '' }, fmt.short(c.module_hash)),
          h('td', {}, c.ramp_percent === null ? '' : c.ramp_percent + '%')))))));
    body.replaceChildren(
      h('table', { id: 'modules-table' },
        h('thead', {}, h('tr', {}, ['hash', 'label', 'status', 'aliases', 'ramping', 'instances', 'workflows', 'activities', 'deployed']
          .map((c) => h('th', {}, c)))),
        h('tbody', {}, moduleRows)),
      h('h2', {}, 'Aliases'),
      aliasCards.length ? aliasCards : h('p', { className: 'muted' }, 'No aliases.'));
  }
  load();
  return { onEvent: throttle(load, 2000) };
};

// ---- replay of a candidate module ---------------------------------------------------------------

Views.replay = (root) => {
  const file = h('input', { id: 'replay-file', type: 'file', accept: '.wasm,application/wasm' });
  const module = h('input', { id: 'replay-module', placeholder: 'or a deployed hash, prefix or alias' });
  const type = h('input', { id: 'replay-type', placeholder: 'any' });
  const status = h('select', { id: 'replay-status' }, h('option', { value: '' }, 'running and blocked'),
    STATUSES.map((s) => h('option', { value: s }, s)));
  const id = h('input', { id: 'replay-id', placeholder: 'any' });
  const limit = h('input', { id: 'replay-limit', type: 'number', min: 1, placeholder: 'all' });
  const strict = h('input', { id: 'replay-strict', type: 'checkbox' });
  const out = h('div', { id: 'replay-out' });
  const run = h('button', { id: 'replay-run', type: 'submit', className: 'primary' }, 'Replay');
  root.append(h('h1', {}, 'Replay a candidate module'),
    h('p', { className: 'muted' }, 'Replays recorded histories against a module before you deploy it. ' +
      'The uploaded candidate is never stored.'),
    h('form', {
      className: 'card',
      onsubmit: async (e) => {
        e.preventDefault();
        const candidate = file.files[0];
        if (!candidate && !module.value.trim()) {
          out.replaceChildren(errorBox({ message: 'Choose a .wasm file or name a deployed module.' }));
          return;
        }
        run.disabled = true;
        try {
          await replay(candidate, {
            module: candidate ? '' : module.value.trim(), workflow_type: type.value.trim(),
            status: status.value, id: id.value.trim(), limit: limit.value,
            strict_inputs: strict.checked ? 'true' : '', job: 'true',
          }, out);
        } finally {
          run.disabled = false;
        }
      },
    },
    h('div', { className: 'row' }, h('label', {}, 'Candidate (.wasm)', file), h('label', {}, 'Module', module)),
    h('div', { className: 'row' }, h('label', {}, 'Workflow type', type), h('label', {}, 'Status', status),
      h('label', {}, 'Instance id', id), h('label', {}, 'Limit', limit),
      h('label', {}, 'Strict inputs', strict), run)),
    out);
  return {};
};

// Runs the replay as a job and shows its progress, then its report.
async function replay(candidate, params, out) {
  out.replaceChildren(h('p', { className: 'muted' }, 'Uploading…'));
  let job;
  try {
    job = await Pinion.post('/v1/replay', candidate || undefined, params);
    while (job.state === 'queued' || job.state === 'running') {
      out.replaceChildren(h('p', { id: 'replay-progress', className: 'muted' },
        `${job.id}: ${job.state}, ${job.done}${job.total === undefined || job.total === null ? '' : ' of ' + job.total} instances`));
      job = await Pinion.get('/v1/jobs/' + Pinion.seg(job.id), { wait: 10 });
    }
  } catch (e) {
    out.replaceChildren(errorBox(e));
    return;
  }
  if (job.state !== 'succeeded') {
    out.replaceChildren(errorBox(job.error || { message: job.state }));
    return;
  }
  out.replaceChildren(replayReport(job.result));
}

function replayReport(r) {
  const s = r.summary;
  return h('div', { id: 'replay-report', className: 'card' },
    h('h2', {}, 'Report for ', h('code', { title: r.module }, fmt.short(r.module))),
    h('p', { id: 'replay-summary' },
      `${s.compatible} compatible, ${s.diverged} diverged, ${s.failed} failed, ${s.results_differ} with a different result`),
    r.reports.length === 0 ? h('p', { className: 'muted' }, 'No history matched the filters.') :
      h('table', {},
        h('thead', {}, h('tr', {}, ['instance', 'status', 'outcome', 'event', 'history has', 'code produced', 'notes']
          .map((c) => h('th', {}, c)))),
        h('tbody', {}, r.reports.map((x) => h('tr', { className: x.outcome },
          h('td', {}, h('a', { href: '#/instances/' + Pinion.seg(x.instance_id) }, x.instance_id), ' ', x.workflow_type),
          h('td', {}, x.recorded_status),
          h('td', {}, statusBadge(x.outcome === 'compatible' ? 'completed' : 'failed'), ' ', x.outcome),
          h('td', {}, x.event_index == null ? '' : '#' + x.event_index),
          h('td', { className: 'mono' }, x.recorded || ''),
          h('td', { className: 'mono' }, x.produced || ''),
          h('td', {}, [x.outcome === 'failed' ? x.message : '',
            x.result_differs ? 'result differs: ' + fmt.json(x.result, 200) : '',
            ...(x.warnings || [])].filter(Boolean).join('; ')))))));
}
