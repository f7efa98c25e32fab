//! Helpers of the background tasks (follower, flushers, purge): each runs until a stop signal.

use std::time::Duration;

use tokio::sync::watch;

/// Sleeps for `d`; true when asked to stop meanwhile.
pub async fn sleep_or_stop(stop: &mut watch::Receiver<bool>, d: Duration) -> bool {
    if *stop.borrow() {
        return true;
    }
    tokio::select! {
        () = tokio::time::sleep(d) => *stop.borrow(),
        _ = stop.changed() => true,
    }
}
