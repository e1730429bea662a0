-- The commit of an ordinary step (an activation of a running instance that stays running,
-- creates no instance and starts or cancels no child: nearly every commit) in one statement,
-- so one round trip instead of one per statement plus BEGIN and COMMIT
-- (`store/postgres/commit.rs`, `step`). The same rules as the statement-by-statement path
-- (`apply` there): the instance row is read FOR UPDATE, the history length and the owner
-- are checked, and a violation raises SQLSTATE PNCON (conflict) or PNNFD (no such
-- instance), which the store maps to its errors; nothing of the step is then written.
CREATE FUNCTION pinion_commit_step(
    p_id TEXT,
    p_expected_next BIGINT,
    p_me TEXT,
    p_now BIGINT,
    p_event_ids BIGINT[],
    p_event_data TEXT[],
    p_consumed_inbox BIGINT[],
    p_resolved_seq BIGINT[],
    p_resolved_attempt BIGINT[],
    p_act_seq BIGINT[],
    p_act_type TEXT[],
    p_act_input TEXT[],
    p_act_options TEXT[],
    p_act_lease BIGINT[],
    p_timer_seq BIGINT[],
    p_timer_fire_at BIGINT[],
    p_cancelled_timers BIGINT[],
    p_cancelled_activities BIGINT[]
) RETURNS VOID LANGUAGE plpgsql AS $$
DECLARE
    cur RECORD;
    n BIGINT;
    i INT;
BEGIN
    SELECT event_count, status, module_hash, owner INTO cur
        FROM instances WHERE id = p_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'instance %', p_id USING ERRCODE = 'PNNFD';
    END IF;
    IF cur.event_count + 1 <> p_expected_next OR cur.status <> 'running' THEN
        RAISE EXCEPTION 'instance %: expected to append event % but history has % events and status %',
            p_id, p_expected_next, cur.event_count, cur.status USING ERRCODE = 'PNCON';
    END IF;
    -- One member activates an instance at a time (`store/postgres/members.rs`).
    IF p_me IS NOT NULL THEN
        IF cur.owner IS NOT NULL AND cur.owner <> p_me THEN
            RAISE EXCEPTION 'instance % is owned by server %, not this one (%)',
                p_id, cur.owner, p_me USING ERRCODE = 'PNCON';
        ELSIF cur.owner IS NULL THEN
            UPDATE instances SET owner = p_me WHERE id = p_id;
        END IF;
    END IF;
    INSERT INTO events(instance_id, id, time_ms, data)
        SELECT p_id, u.id, p_now, u.data FROM unnest(p_event_ids, p_event_data) AS u(id, data);
    IF cardinality(p_consumed_inbox) > 0 THEN
        DELETE FROM inbox WHERE instance_id = p_id AND id = ANY(p_consumed_inbox);
    END IF;
    FOR i IN 1 .. coalesce(array_length(p_resolved_seq, 1), 0) LOOP
        DELETE FROM activity_tasks
            WHERE instance_id = p_id AND seq = p_resolved_seq[i] AND attempt = p_resolved_attempt[i];
        GET DIAGNOSTICS n = ROW_COUNT;
        IF n <> 1 THEN
            RAISE EXCEPTION 'instance %: attempt % of activity % is no longer current (cancelled, or retried elsewhere)',
                p_id, p_resolved_attempt[i], p_resolved_seq[i] USING ERRCODE = 'PNCON';
        END IF;
    END LOOP;
    IF cardinality(p_act_seq) > 0 THEN
        INSERT INTO activity_tasks(instance_id, seq, module_hash, activity_type, input, options,
                                   attempt, visible_at_ms, lease_until_ms, started_at_ms, leased_by)
            SELECT p_id, a.seq, cur.module_hash, a.ty, a.input, a.options, 1, p_now, a.lease,
                   CASE WHEN a.lease IS NULL THEN NULL ELSE p_now END,
                   CASE WHEN a.lease IS NULL THEN NULL ELSE p_me END
            FROM unnest(p_act_seq, p_act_type, p_act_input, p_act_options, p_act_lease)
                AS a(seq, ty, input, options, lease);
    END IF;
    IF cardinality(p_timer_seq) > 0 THEN
        INSERT INTO timers(instance_id, seq, fire_at_ms)
            SELECT p_id, t.seq, t.fire_at FROM unnest(p_timer_seq, p_timer_fire_at) AS t(seq, fire_at);
    END IF;
    IF cardinality(p_cancelled_timers) > 0 THEN
        DELETE FROM timers WHERE instance_id = p_id AND seq = ANY(p_cancelled_timers);
    END IF;
    IF cardinality(p_cancelled_activities) > 0 THEN
        DELETE FROM activity_tasks WHERE instance_id = p_id AND seq = ANY(p_cancelled_activities);
    END IF;
    UPDATE instances SET event_count = cur.event_count + cardinality(p_event_ids),
                         updated_at_ms = p_now, closing = FALSE,
                         runnable = EXISTS(SELECT 1 FROM inbox WHERE instance_id = p_id)
        WHERE id = p_id;
END
$$;
