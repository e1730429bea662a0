// pinion console: one instance. Its state and outcome, the divergence report when it is
// blocked, pending activities, the history as a timeline, and signal / cancel / terminate
// (each behind a confirmation). Reads GET /v1/instances/{id} and .../history.
'use strict';

// "[PN001] nondeterminism: instance X, event #3: history has A, code produced B" into its
// parts; null for another reason (a trap, say).
function parseDivergence(reason) {
  const m = /event #(\d+): history has (.*), code produced (.*)$/s.exec(reason || '');
  if (!m) return null;
  const code = /^\[(PN\d+)\]/.exec(reason);
  return { code: code ? code[1] : '', eventIndex: Number(m[1]), recorded: m[2], produced: m[3] };
}

const EVENT_GROUP = {
  WorkflowStarted: 'input', ActivityCompleted: 'input', ActivityFailed: 'problem',
  ActivityTimedOut: 'problem', TimerFired: 'input', SignalReceived: 'input',
  CancelRequested: 'input', ChildWorkflowCompleted: 'input', ChildWorkflowFailed: 'problem',
  WorkflowTaskCompleted: 'boundary', WorkflowFailed: 'problem',
  ModuleUpgraded: 'operator', WorkflowTerminated: 'operator',
};

// What one history event says, in a line (timers and retries spelled out).
function describe(e, byTimer) {
  const failure = (f) => `${f.kind}: ${f.message}` + (f.attempts ? ` (after ${f.attempts} attempt${f.attempts > 1 ? 's' : ''})` : '');
  switch (e.type) {
    case 'WorkflowStarted':
      return [`${e.workflow_type} on ${fmt.short(e.module_hash)}`, e.version_label ? ` (${e.version_label})` : '',
        e.parent ? `, child of ${e.parent.id}` : '', ', input ', h('code', {}, fmt.json(e.input, 300))];
    case 'WorkflowTaskCompleted':
      return `activation ended (workflow time ${fmt.time(e.now_ms)})`;
    case 'ActivityScheduled': {
      const r = e.options && e.options.retry;
      const retry = r ? (r.maximum_attempts ? `, at most ${r.maximum_attempts} attempts` : ', retried without limit') : '';
      return [`activity #${e.seq} `, h('b', {}, e.activity_type), retry, ', input ', h('code', {}, fmt.json(e.input, 200))];
    }
    case 'ActivityCompleted':
      return [`activity #${e.seq} completed`, e.attempts > 1 ? ` after ${e.attempts} attempts (${e.attempts - 1} retr${e.attempts > 2 ? 'ies' : 'y'})` : '',
        ', result ', h('code', {}, fmt.json(e.result, 200))];
    case 'ActivityFailed':
      return `activity #${e.seq} failed: ${failure(e.failure)}`;
    case 'ActivityTimedOut':
      return `activity #${e.seq} timed out: ${failure(e.failure)}`;
    case 'ActivityCancelled':
      return `activity #${e.seq} cancelled`;
    case 'TimerStarted':
      return `timer #${e.seq} for ${fmt.duration(e.duration_ms)}, fires at ${fmt.time(e.fire_at_ms)}`;
    case 'TimerFired': {
      const started = byTimer[e.seq];
      return `timer #${e.seq} fired` + (started ? ` (${fmt.duration(started.duration_ms)} timer, ${fmt.duration(Math.max(0, e.time_ms - started.fire_at_ms))} after due)` : '');
    }
    case 'TimerCancelled':
      return `timer #${e.seq} cancelled`;
    case 'SignalReceived':
      return ['signal ', h('b', {}, e.name), ', input ', h('code', {}, fmt.json(e.input, 300))];
    case 'CancelRequested':
      return `cancellation requested: ${e.reason}`;
    case 'MarkerRecorded':
      return ['marker ', h('b', {}, e.marker_id), ' ', h('code', {}, fmt.json(e.data, 200))];
    case 'WorkflowCompleted':
      return ['completed with ', h('code', {}, fmt.json(e.result, 300))];
    case 'WorkflowFailed':
      return `failed: ${failure(e.failure)}`;
    case 'WorkflowCancelled':
      return `cancelled: ${e.reason}`;
    case 'WorkflowTerminated':
      return `terminated: ${e.reason}`;
    case 'ChildWorkflowInitiated':
      return [`child #${e.seq} `, h('a', { href: '#/instances/' + Pinion.seg(e.child_id) }, e.child_id),
        ` (${e.workflow_type}), input `, h('code', {}, fmt.json(e.input, 200))];
    case 'ChildWorkflowCompleted':
      return [`child #${e.seq} ${e.child_id} completed with `, h('code', {}, fmt.json(e.result, 200))];
    case 'ChildWorkflowFailed':
      return `child #${e.seq} ${e.child_id} failed: ${failure(e.failure)}`;
    case 'ChildCancelRequested':
      return `cancellation of child #${e.seq} requested`;
    case 'WorkflowContinuedAsNew':
      return ['continued as new ', e.workflow_type, ' on ', fmt.short(e.module_hash), ', input ', h('code', {}, fmt.json(e.input, 200))];
    case 'ModuleUpgraded':
      return `upgraded from ${fmt.short(e.from)} to ${fmt.short(e.to)}`;
    default: {
      const rest = Object.assign({}, e);
      delete rest.id; delete rest.time_ms; delete rest.type;
      return h('code', {}, fmt.json(rest, 300));
    }
  }
}

function timeline(events, divergence) {
  const byTimer = {};
  for (const e of events) if (e.type === 'TimerStarted') byTimer[e.seq] = e;
  const t0 = events.length ? events[0].time_ms : 0;
  const items = events.map((e) => {
    const diverged = divergence && divergence.eventIndex === e.id;
    const group = EVENT_GROUP[e.type] || 'command';
    return h('li', { className: group + (diverged ? ' diverged' : ''), 'data-event': e.id, 'data-type': e.type },
      h('span', { className: 'mono' }, '#' + e.id),
      h('span', { className: 'muted', title: fmt.time(e.time_ms) }, '+' + fmt.duration(e.time_ms - t0)),
      h('span', { className: 'kind' }, e.type),
      h('span', {}, describe(e, byTimer), diverged ? h('b', { className: 'error' }, ` ← replay diverged here: code produced ${divergence.produced}`) : ''));
  });
  return h('ol', { id: 'timeline', className: 'timeline' }, items);
}

function pendingTable(pending) {
  return h('table', { id: 'pending' },
    h('thead', {}, h('tr', {}, ['#', 'activity', 'attempt', 'state', 'started', 'next attempt', 'last failure', 'heartbeat']
      .map((c) => h('th', {}, c)))),
    h('tbody', {}, pending.map((a) => h('tr', { 'data-seq': a.seq },
      h('td', {}, a.seq), h('td', {}, a.activity_type), h('td', { className: 'attempt' }, a.attempt),
      h('td', {}, a.state.replace('_', ' ')), h('td', {}, fmt.time(a.started_at_ms)),
      h('td', {}, fmt.time(a.next_attempt_at_ms)),
      h('td', { className: 'last-failure' }, a.last_failure ? `${a.last_failure.kind}: ${a.last_failure.message}` : ''),
      h('td', {}, a.last_heartbeat_at_ms ? fmt.time(a.last_heartbeat_at_ms) + ' ' + fmt.json(a.heartbeat_details, 100) : '')))));
}

function outcome(inst, divergence) {
  if (inst.status === 'completed') {
    return h('div', { className: 'card' }, h('h2', {}, 'Result'), h('pre', { id: 'instance-result' }, fmt.pretty(inst.result)));
  }
  if (inst.status === 'failed' && inst.failure) {
    const f = inst.failure;
    return h('div', { className: 'card' }, h('h2', {}, 'Failure'),
      h('pre', { id: 'instance-failure' }, `${f.kind}: ${f.message}\nattempts: ${f.attempts}${f.non_retryable ? ', non-retryable' : ''}`));
  }
  if (inst.status === 'blocked') {
    return h('div', { className: 'card divergence', id: 'blocked' },
      h('h2', {}, divergence ? 'Blocked: divergence report' : 'Blocked'),
      divergence ? h('table', { id: 'divergence' }, h('tbody', {},
        h('tr', {}, h('td', {}, 'code'), h('td', { className: 'mono' }, divergence.code)),
        h('tr', {}, h('td', {}, 'event'), h('td', { id: 'div-index' }, '#' + divergence.eventIndex)),
        h('tr', {}, h('td', {}, 'history has'), h('td', { id: 'div-recorded', className: 'mono' }, divergence.recorded)),
        h('tr', {}, h('td', {}, 'code produced'), h('td', { id: 'div-produced', className: 'mono' }, divergence.produced)))) : '',
      h('pre', { id: 'blocked-reason' }, inst.blocked_reason || ''),
      h('p', { className: 'muted' }, 'The instance waits untouched. Repair it by upgrading it to a module that replays ' +
        'its history (check candidates on the ', h('a', { href: '#/replay' }, 'Replay'), ' page), or terminate it.'));
  }
  return null;
}

// Signal, cancel and terminate, each after a confirmation.
function actions(inst, refresh) {
  const message = h('p', { id: 'action-message' });
  const show = (text, bad) => {
    message.textContent = text;
    message.className = bad ? 'error' : 'muted';
  };
  const act = async (question, f) => {
    if (!(await App.confirm(question))) {
      show('Nothing sent.');
      return;
    }
    try {
      show(await f());
    } catch (e) {
      show(e.code ? `${e.code}: ${e.message}` : e.message, true);
    }
    refresh();
  };
  const id = Pinion.seg(inst.id);
  const name = h('input', { id: 'signal-name', placeholder: 'signal name' });
  const input = h('textarea', { id: 'signal-input', placeholder: 'input (JSON; empty means null)' });
  const reason = h('input', { id: 'stop-reason', placeholder: 'reason (optional)' });
  const signal = h('button', {
    id: 'signal-send', type: 'button', className: 'primary',
    onclick: () => {
      let value;
      try {
        value = parseJsonInput(input.value, 'the signal input');
      } catch (e) {
        show(e.message, true);
        return;
      }
      if (!name.value.trim()) {
        show('Name the signal.', true);
        return;
      }
      act(`Send signal "${name.value.trim()}" with input ${fmt.json(value, 200)} to ${inst.id}?`, async () => {
        const r = await Pinion.post(`/v1/instances/${id}/signals/${Pinion.seg(name.value.trim())}`, { input: value });
        return `Signal ${r.signal} queued.`;
      });
    },
  }, 'Send signal');
  const stop = (verb) => h('button', {
    id: verb + '-send', type: 'button', className: verb === 'terminate' ? 'danger' : '',
    onclick: () => act(verb === 'terminate'
      ? `Terminate ${inst.id}? It ends at once; its code does not run again.`
      : `Request cancellation of ${inst.id}? Its code sees the request and decides how to end.`, async () => {
      const body = reason.value.trim() ? { reason: reason.value.trim() } : {};
      const r = await Pinion.post(`/v1/instances/${id}/${verb}`, body);
      return r.instances.map((x) => `${x.id}: ${x.result}`).join(', ');
    }),
  }, verb === 'terminate' ? 'Terminate' : 'Cancel');
  return h('div', { className: 'card', id: 'actions' }, h('h2', {}, 'Act'),
    h('div', { className: 'row' }, h('label', {}, 'Signal', name), h('label', { className: 'grow' }, 'Input', input), signal),
    h('div', { className: 'row' }, h('label', {}, 'Reason', reason), stop('cancel'), stop('terminate')),
    message);
}

Views.instance = (root, route, gen) => {
  const id = route.parts.slice(1).join('/');
  const run = route.params.get('run') || '';
  const body = h('div', {}, h('p', { className: 'muted' }, 'Loading…'));
  root.append(h('h1', {}, 'Instance ', h('code', { id: 'instance-id' }, id)), body);
  let loading = false;
  let again = false;
  let poll = null;
  // Kept across reloads, so what the user is typing survives a live update.
  let actionsCard = null;

  // One load at a time; a request for another while one runs reloads once after it, so
  // the last event always shows.
  async function load() {
    if (loading) {
      again = true;
      return;
    }
    loading = true;
    try {
      await loadOnce();
    } finally {
      loading = false;
    }
    if (again && gen === App.current()) {
      again = false;
      load();
    }
  }

  async function loadOnce() {
    let inst;
    let history;
    try {
      [inst, history] = await Promise.all([
        Pinion.get('/v1/instances/' + Pinion.seg(id)),
        Pinion.get('/v1/instances/' + Pinion.seg(id) + '/history', { run }),
      ]);
    } catch (e) {
      if (gen === App.current()) body.replaceChildren(errorBox(e));
      return;
    }
    if (gen !== App.current()) return;
    // Activity attempts are not lifecycle events: while some are pending, look again.
    clearTimeout(poll);
    if (inst.pending_activities && inst.pending_activities.length) {
      poll = setTimeout(() => { if (gen === App.current()) load(); }, 2000);
    }
    const divergence = inst.status === 'blocked' ? parseDivergence(inst.blocked_reason) : null;
    const runs = [];
    for (let n = 1; n <= inst.run; n += 1) {
      runs.push(n === Number(run || inst.run) ? h('b', {}, `run ${n}`)
        : h('a', { href: `#/instances/${Pinion.seg(id)}?run=${n}` }, `run ${n}`), ' ');
    }
    const open = inst.status === 'running' || inst.status === 'blocked';
    // replaceChildren would write null as text: keep only the parts this instance has.
    body.replaceChildren(...[
      h('div', { className: 'card' }, h('dl', { className: 'facts' },
        h('dt', {}, 'status'), h('dd', {}, statusBadge(inst.status, 'instance-status'),
          inst.cancel_requested ? ' cancellation requested' : '', inst.imported ? ' imported' : ''),
        h('dt', {}, 'workflow type'), h('dd', {}, inst.workflow_type),
        h('dt', {}, 'module'), h('dd', { className: 'mono' }, h('a', { href: '#/modules', title: inst.module_hash }, fmt.short(inst.module_hash))),
        h('dt', {}, 'run'), h('dd', {}, inst.run > 1 ? runs : '1'),
        h('dt', {}, 'created'), h('dd', {}, fmt.time(inst.created_at_ms)),
        h('dt', {}, 'updated'), h('dd', {}, fmt.time(inst.updated_at_ms)),
        h('dt', {}, 'events'), h('dd', {}, inst.event_count))),
      outcome(inst, divergence),
      open && !inst.imported ? (actionsCard = actionsCard || actions(inst, load)) : null,
      inst.pending_activities && inst.pending_activities.length
        ? h('div', { className: 'card' }, h('h2', {}, 'Pending activities'), pendingTable(inst.pending_activities)) : null,
      h('h2', {}, `History (${history.events.length} events)`),
      timeline(history.events, run && Number(run) !== inst.run ? null : divergence),
    ].filter(Boolean));
  }
  load();
  const refresh = throttle(load, 250);
  return {
    onEvent(ev) {
      if (ev.instance_id === id) refresh();
    },
  };
};
