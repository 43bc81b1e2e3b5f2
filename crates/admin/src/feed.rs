//! The live feed: `GET /events` (server-sent events) and `GET /snapshot`.
//!
//! One sampler task computes a snapshot every [`FEED_INTERVAL`] whether or
//! not anyone listens — state changes must be caught while no dashboard is
//! open — and publishes it, serialized once, on a watch channel. Every
//! `/events` client reads that channel, so a hundred open dashboards cost a
//! hundred cheap clones of one string, not a hundred samplings. A slow client
//! simply skips to the newest snapshot (watch semantics), so it can never
//! make the sampler or other clients wait.

use std::{
    convert::Infallible,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use axum::{
    extract::State,
    http::{StatusCode, header},
    response::{
        IntoResponse, Response,
        sse::{Event, KeepAlive, Sse},
    },
};
use futures_util::Stream;
use tokio::sync::watch;

use crate::{AdminState, sample::Sampler};

/// How often the feed samples: once a second is what a human watching a
/// dashboard can follow, and costs the process next to nothing.
pub const FEED_INTERVAL: Duration = Duration::from_secs(1);

/// What the watch channel holds.
#[derive(Clone, Debug)]
enum Frame {
    /// Before the first sample.
    Pending,
    /// A snapshot as JSON.
    Snapshot(Arc<str>),
    /// The admin listener is shutting down: streams end.
    Closed,
}

#[derive(Debug)]
pub(crate) struct Feed {
    interval: Duration,
    frames: watch::Sender<Frame>,
    sampler: Mutex<Sampler>,
}

impl Feed {
    pub(crate) fn new(interval: Duration) -> Self {
        Self {
            interval,
            frames: watch::Sender::new(Frame::Pending),
            sampler: Mutex::new(Sampler::new()),
        }
    }

    /// Samples once and publishes the result.
    fn publish(&self, state: &AdminState) {
        let snapshot = self
            .sampler
            .lock()
            // The sampler's history is only ever replaced whole, so a panic
            // while holding the lock leaves nothing half-written.
            .unwrap_or_else(PoisonError::into_inner)
            .tick(state);
        match serde_json::to_string(&snapshot) {
            Ok(json) => {
                self.frames.send_replace(Frame::Snapshot(Arc::from(json)));
            }
            // Plain data with string keys always serializes; should that ever
            // change, the feed keeps its previous snapshot.
            Err(e) => tracing::warn!(error = %e, "cannot serialize the admin feed snapshot"),
        }
    }
}

/// Samples every interval until `stop` turns true (or its sender is
/// dropped), then closes every open stream.
pub(crate) async fn run(state: Arc<AdminState>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(state.feed.interval);
    // A stalled runtime should not cause a burst of catch-up samples.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => state.feed.publish(&state),
            _ = stop.wait_for(|s| *s) => break,
        }
    }
    state.feed.frames.send_replace(Frame::Closed);
}

/// The next frame to send; `None` ends the stream.
async fn next_frame(rx: &mut watch::Receiver<Frame>) -> Option<Arc<str>> {
    loop {
        let frame = rx.borrow_and_update().clone();
        match frame {
            Frame::Snapshot(json) => return Some(json),
            Frame::Closed => return None,
            Frame::Pending => {}
        }
        rx.changed().await.ok()?;
    }
}

/// `GET /events`: the current snapshot at once, then each new one.
pub(crate) async fn events(
    State(state): State<Arc<AdminState>>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let rx = state.feed.frames.subscribe();
    let stream = futures_util::stream::unfold((rx, true), |(mut rx, first)| async move {
        if !first {
            rx.changed().await.ok()?;
        }
        let json = next_frame(&mut rx).await?;
        let event = Event::default().event("snapshot").data(&*json);
        Some((Ok(event), (rx, false)))
    });
    // Comments every 15s keep idle proxies between browser and admin from
    // closing the stream.
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

/// `GET /snapshot`: the latest snapshot as plain JSON, for scripts.
pub(crate) async fn snapshot(State(state): State<Arc<AdminState>>) -> Response {
    let frame = state.feed.frames.borrow().clone();
    match frame {
        Frame::Snapshot(json) => (
            [(header::CONTENT_TYPE, "application/json")],
            json.to_string(),
        )
            .into_response(),
        Frame::Pending | Frame::Closed => {
            (StatusCode::SERVICE_UNAVAILABLE, "no snapshot yet\n").into_response()
        }
    }
}
