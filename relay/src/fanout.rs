//! Fan-out: one pump per downstream subscription copies a track's cache to that subscriber.
//!
//! The per-subscriber pump is what keeps subscribers independent: its [`Policy`] starts it at
//! the first object of the newest cached group (a keyframe), follows the live edge, and when its
//! own connection falls behind (its unsent backlog passes the configured budget) drops its own
//! stale groups and jumps to the newest one. Nobody else waits for it, and the relay holds at
//! most the track's cache budget plus each subscriber's backlog budget. The pump carries out
//! the policy's plan with the stream writers of [`crate::writer`] and waits for the cache or for
//! QUIC to take more.

use std::{collections::HashMap, sync::atomic::Ordering, sync::Arc};

use crate::{
    cache::Key,
    policy::{self, Policy, TrackError, Window},
    track::TrackCache,
    writer::{
        any_writable, send_datagram, settle, Abandon, Backlog, DirectStream, DirectTarget, Sink,
    },
};

/// How often a throttled subscriber's connection progress is re-checked.
const THROTTLE_POLL: std::time::Duration = std::time::Duration::from_millis(20);

/// Copies a cached track to one subscriber until the track ends, its window ends, or the
/// subscriber leaves: [`Policy`] decides what to send, this carries it out on QUIC streams
/// (or datagrams) and waits for the cache or QUIC. Cancel-safe: dropping the future drops
/// only this subscriber's groups (their streams are reset).
///
/// With `coalesce`, while a shard of the relay is saturated, objects that arrive are held for
/// the coalescing window and handed to QUIC together: one send of two frames (one sendmsg,
/// one wake of the connection's task, one pass here) instead of two.
pub async fn pump(
    cache: Arc<TrackCache>,
    target: &DirectTarget,
    window: Window,
    backlog: Arc<Backlog>,
    coalesce: Option<crate::shard::Coalesce>,
) -> Result<(), TrackError> {
    let metrics = cache.metrics().clone();
    let mut rx = cache.subscribe();
    let mut policy = Policy::new(window);
    let mut sinks: HashMap<Key, (u8, Sink)> = HashMap::new();
    // Finished streams whose last bytes QUIC has not taken yet.
    let mut draining: Vec<DirectStream> = Vec::new();

    loop {
        rx.borrow_and_update();
        // Copy what the subscriber's connection can take. Past its backlog budget the rest
        // waits in the cache, so the relay never queues more than the budget for one subscriber.
        let room = backlog.limit.saturating_sub(backlog.bytes());
        let (plan, datagrams) =
            cache.view(|store, ended, datagrams| (policy.plan(store, ended, room), datagrams));
        for (key, priority) in &plan.open {
            let sink = if datagrams {
                Sink::Datagrams
            } else {
                let stream =
                    DirectStream::open(target, *key, *priority, &metrics, &backlog).await?;
                metrics.direct_streams.fetch_add(1, Ordering::Relaxed);
                Sink::Direct(stream)
            };
            sinks.insert(*key, (*priority, sink));
        }
        for (key, objects) in plan.send {
            let Some((priority, sink)) = sinks.get_mut(&key) else {
                continue;
            };
            for obj in objects {
                let size = obj.payload.len();
                match sink {
                    Sink::Direct(s) => s.push(obj),
                    Sink::Datagrams => send_datagram(target, key, *priority, &obj)?,
                }
                backlog.hand(size);
                metrics.objects_out.fetch_add(1, Ordering::Relaxed);
                metrics.bytes_out.fetch_add(size as u64, Ordering::Relaxed);
            }
            if let Sink::Direct(s) = sink {
                // One hand-over to QUIC per subgroup and pass.
                s.flush();
            }
        }
        for key in plan.finish {
            if let Some((_, Sink::Direct(mut s))) = sinks.remove(&key) {
                s.finishing = true;
                if !s.flush() {
                    draining.push(s);
                }
            }
        }
        for (key, code) in plan.reset {
            if let Some((_, Sink::Direct(mut s))) = sinks.remove(&key) {
                s.reset(if code == policy::reset::TOO_FAR_BEHIND {
                    Abandon::TooFarBehind
                } else {
                    Abandon::TrackEnded
                });
            }
        }
        if plan.dropped > 0 {
            metrics
                .groups_dropped
                .fetch_add(plan.dropped as u64, Ordering::Relaxed);
        }
        if plan.skipped {
            metrics.slow_skips.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(
                dropped = plan.dropped,
                "subscriber too far behind: skipped to the newest group"
            );
        }
        draining.retain_mut(|s| !s.flush());
        if let Some(result) = plan.done {
            settle(draining).await;
            return result;
        }

        let blocked = !draining.is_empty() || sinks.values().any(|(_, s)| s.blocked());
        let streams = sinks
            .values_mut()
            .filter_map(|(_, s)| match s {
                Sink::Direct(d) => Some(d),
                Sink::Datagrams => None,
            })
            .chain(draining.iter_mut());
        if plan.throttled {
            // Re-check the connection's progress even if no new object arrives: QUIC has no
            // signal for "the connection sent more", only for one stream taking more bytes.
            tokio::select! {
                res = rx.changed() => if res.is_err() { return Ok(()) },
                () = tokio::time::sleep(THROTTLE_POLL) => {}
                () = any_writable(streams), if blocked => {}
            }
        } else if blocked {
            // A stream waits for flow control: wake when QUIC takes more, or on new objects.
            tokio::select! {
                res = rx.changed() => if res.is_err() { return Ok(()) },
                () = any_writable(streams) => {}
            }
        } else {
            drop(streams);
            if rx.changed().await.is_err() {
                return Ok(());
            }
            if let Some(window) = coalesce.as_ref().and_then(crate::shard::Coalesce::window) {
                // What else arrives meanwhile goes out in the same pass.
                tokio::time::sleep(window).await;
            }
        }
    }
}
