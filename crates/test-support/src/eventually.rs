//! Waiting for asynchronous effects without sleeping a fixed time.
//!
//! Tests poll a condition every [`POLL_INTERVAL`] until it holds or a deadline
//! passes, then panic with a message naming what was awaited. A fixed sleep
//! is either too short on a loaded CI machine (flaky) or too long everywhere
//! (slow); polling is neither.

use std::future::Future;
use std::time::{Duration, Instant};

/// How often conditions are re-evaluated.
pub const POLL_INTERVAL: Duration = Duration::from_millis(5);

/// Polls `condition` until it returns `true`; panics after `timeout`.
///
/// ```no_run
/// # async fn demo(backend: &switchyard_test_support::Backend) {
/// use std::time::Duration;
/// use switchyard_test_support::eventually;
///
/// eventually(Duration::from_secs(5), || async { backend.requests() == 3 }).await;
/// # }
/// ```
pub async fn eventually<F, Fut>(timeout: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if condition().await {
            return;
        }
        if Instant::now() >= deadline {
            panic!("condition was not met within {timeout:?}");
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Polls `probe` until it returns `Some(value)` and returns that value;
/// panics after `timeout` with `what` in the message.
pub async fn wait_for<T, F, Fut>(timeout: Duration, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Re-evaluates a boolean expression (which may contain `.await`) every few
/// milliseconds until it is true; panics naming the expression after the
/// timeout. Must be used inside an async fn running on tokio.
///
/// ```no_run
/// # async fn demo(backend: &switchyard_test_support::Backend) {
/// use std::time::Duration;
/// use switchyard_test_support::{assert_eventually, grpc};
///
/// assert_eventually!(backend.requests() >= 2, Duration::from_secs(5));
/// assert_eventually!(
///     grpc::try_client(backend.addr()).await.is_err(),
///     Duration::from_secs(5),
///     "backend {} still accepts connections",
///     backend.name()
/// );
/// # }
/// ```
///
/// A macro rather than a closure so the expression can borrow locals freely.
#[macro_export]
macro_rules! assert_eventually {
    ($cond:expr, $timeout:expr $(,)?) => {
        $crate::assert_eventually!($cond, $timeout, "{}", ::std::stringify!($cond))
    };
    ($cond:expr, $timeout:expr, $($msg:tt)+) => {{
        let __timeout: ::std::time::Duration = $timeout;
        let __deadline = ::std::time::Instant::now() + __timeout;
        loop {
            if $cond {
                break;
            }
            if ::std::time::Instant::now() >= __deadline {
                ::std::panic!(
                    "not true within {:?}: {}",
                    __timeout,
                    ::std::format_args!($($msg)+)
                );
            }
            $crate::eventually::tick().await;
        }
    }};
}

/// One polling pause; used by [`assert_eventually!`].
#[doc(hidden)]
pub async fn tick() {
    tokio::time::sleep(POLL_INTERVAL).await;
}
