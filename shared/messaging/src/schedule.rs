//! Schedules faster than EventBridge's one minute.
//!
//! The outbox relay runs every second, the fabric monitor every second and the
//! orchestrator's sweep every five; EventBridge fires at most once a minute.
//! On AWS such a schedule becomes `rate(1 minute)` whose event carries
//! `detail.stratus_repeat = {every_ms, for_ms}` (terraform/manifest.tf and
//! schedules.tf), and
//! the function repeats its tick every `every_ms` for `for_ms` within that one
//! invocation ([`ticks`]), ending before its deadline. Under the local runner
//! the event has no `stratus_repeat`, so each event is one tick, as before.
//!
//! One invocation a minute that sleeps between ticks was chosen over a Step
//! Functions loop: it keeps the cadence with one Lambda invocation a minute
//! and no other service (a Standard state machine waking every second would be
//! 2.6 million state transitions a month, about $65, for each schedule).

use std::future::Future;
use std::time::{Duration, SystemTime};

use serde_json::Value;

/// What a tick needs to leave before the invocation's deadline.
pub const DEADLINE_MARGIN: Duration = Duration::from_secs(2);

/// The repeat an event asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repeat {
    pub every: Duration,
    pub window: Duration,
}

impl Repeat {
    /// `detail.stratus_repeat` of a scheduled event, if it has a valid one
    /// (both numbers positive, the period no longer than the window).
    pub fn of(event: &Value) -> Option<Repeat> {
        let r = event.get("detail")?.get("stratus_repeat")?;
        let every = r.get("every_ms")?.as_u64().filter(|n| *n > 0)?;
        let window = r.get("for_ms")?.as_u64().filter(|n| *n >= every)?;
        Some(Repeat {
            every: Duration::from_millis(every),
            window: Duration::from_millis(window),
        })
    }
}

/// What [`ticks`] did: how many ticks ran, how many failed, and the last
/// one's outcome.
#[derive(Debug)]
pub struct Ticks<T, E> {
    pub ran: u32,
    pub failed: u32,
    pub last: Result<T, E>,
}

/// Runs `tick` once, or, when `event` asks for a repeat, every period within
/// its window, starting each tick on the period's grid (a tick longer than
/// the period skips the slots it overran; the grid does not shift) and never
/// starting one that could not end [`DEADLINE_MARGIN`] before `deadline`. A failed tick is logged and
/// the next one runs: one broker hiccup must not stop a minute of relaying.
pub async fn ticks<T, E, F, Fut>(event: &Value, deadline: SystemTime, mut tick: F) -> Ticks<T, E>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let Some(repeat) = Repeat::of(event) else {
        let last = tick().await;
        let failed = u32::from(last.is_err());
        return Ticks {
            ran: 1,
            failed,
            last,
        };
    };
    let start = tokio::time::Instant::now();
    let wall = SystemTime::now();
    // The latest moment a tick may start: within the window, and one period
    // plus the margin before the deadline.
    let by_deadline = deadline
        .duration_since(wall)
        .unwrap_or_default()
        .saturating_sub(DEADLINE_MARGIN + repeat.every);
    let last_start = repeat.window.saturating_sub(repeat.every).min(by_deadline);
    let (mut ran, mut failed) = (0u32, 0u32);
    loop {
        let last = tick().await;
        ran += 1;
        if let Err(e) = &last {
            failed += 1;
            tracing::warn!(tick = ran, error = %e, "a repeated tick failed; the next runs on time");
        }
        // The next slot of the grid after now: a tick longer than the period
        // skips the slots it overran rather than running them back to back.
        let slot = start.elapsed().as_millis() / repeat.every.as_millis() + 1;
        let next = repeat.every * u32::try_from(slot).unwrap_or(u32::MAX);
        if next > last_start {
            tracing::debug!(ran, failed, "repeated ticks done");
            return Ticks { ran, failed, last };
        }
        tokio::time::sleep_until(start + next).await;
    }
}

/// A Lambda context's deadline (milliseconds since the epoch) as a time.
pub fn deadline(epoch_ms: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(epoch_ms)
}

impl<T: serde::Serialize, E: std::fmt::Display> Ticks<T, E> {
    /// The function's answer: the last tick's report (with `ticks` and
    /// `failed_ticks` when it repeated), or the last tick's error, so that a
    /// failure that lasts shows as a failed invocation.
    pub fn answer(self) -> Result<Value, lambda_runtime::Error> {
        let report = self
            .last
            .map_err(|e| lambda_runtime::Error::from(e.to_string()))?;
        let mut v = serde_json::to_value(report)?;
        if self.ran > 1 {
            if let Some(map) = v.as_object_mut() {
                map.insert("ticks".into(), self.ran.into());
                map.insert("failed_ticks".into(), self.failed.into());
            }
        }
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn event(every_ms: u64, for_ms: u64) -> Value {
        json!({"source": "aws.events", "detail": {"stratus_repeat": {"every_ms": every_ms, "for_ms": for_ms}}})
    }

    #[test]
    fn the_repeat_is_read_only_when_whole() {
        assert_eq!(
            Repeat::of(&event(1000, 55000)),
            Some(Repeat {
                every: Duration::from_secs(1),
                window: Duration::from_secs(55)
            })
        );
        for bad in [
            json!({"time": "2026-12-03T00:00:00Z"}),
            json!({"detail": {}}),
            event(0, 1000),
            event(5000, 1000),
            json!({"detail": {"stratus_repeat": {"every_ms": "1000", "for_ms": 5000}}}),
        ] {
            assert_eq!(Repeat::of(&bad), None, "{bad}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_plain_event_is_one_tick() {
        let n = AtomicU32::new(0);
        let far = SystemTime::now() + Duration::from_secs(60);
        let t = ticks(&json!({}), far, || async {
            n.fetch_add(1, Ordering::SeqCst);
            Ok::<_, String>(7)
        })
        .await;
        assert_eq!((t.ran, t.failed, t.last), (1, 0, Ok(7)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_repeat_ticks_on_its_grid_through_failures() {
        let n = AtomicU32::new(0);
        let far = SystemTime::now() + Duration::from_secs(600);
        let start = tokio::time::Instant::now();
        let t = ticks(&event(1000, 55000), far, || async {
            let i = n.fetch_add(1, Ordering::SeqCst);
            if i % 10 == 3 {
                Err(format!("tick {i}"))
            } else {
                Ok(i)
            }
        })
        .await;
        // Ticks at 0, 1, ..., 54 s: 55 in a 55 s window, the last ending before it.
        assert_eq!(t.ran, 55);
        assert_eq!(t.failed, 6);
        assert_eq!(t.last, Ok(54));
        assert_eq!(start.elapsed(), Duration::from_secs(54));
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_tick_skips_the_slots_it_overran() {
        let far = SystemTime::now() + Duration::from_secs(600);
        let start = tokio::time::Instant::now();
        let starts = std::sync::Mutex::new(Vec::new());
        // Period 1 s, window 10 s (last start at 9 s), each tick 2.5 s long.
        let t = ticks(&event(1000, 10000), far, || async {
            starts.lock().unwrap().push(start.elapsed().as_millis());
            tokio::time::sleep(Duration::from_millis(2500)).await;
            Ok::<_, String>(())
        })
        .await;
        assert_eq!(*starts.lock().unwrap(), vec![0, 3000, 6000, 9000]);
        assert_eq!(t.ran, 4);
    }

    #[tokio::test(start_paused = true)]
    async fn the_deadline_cuts_the_window_short() {
        // Paused time does not move SystemTime: the deadline is 20 s ahead,
        // so the last tick starts at 20 - 2 (margin) - 5 (period) = 13 s.
        let deadline = SystemTime::now() + Duration::from_secs(20);
        let t = ticks(&event(5000, 60000), deadline, || async {
            Ok::<_, String>(())
        })
        .await;
        assert_eq!(t.ran, 3, "ticks at 0, 5 and 10 s");
    }
}
