//! Serving on one thread per core, as `keygate serve` does.
//!
//! One acceptor hands each new connection, in turn, to one of N worker threads; each worker
//! runs a single-threaded runtime and serves its connections to the end. A request, the
//! upstream connection the gateway forwards it on (one pool per thread, see
//! `keygate_gateway`) and every task in between stay on one thread, so no wake-up crosses
//! threads. On the two-core bench machine this made the gateway about 40% faster than one
//! work-stealing runtime (docs/benchmarks.md). The cost: connections are spread when they
//! arrive, not rebalanced while they live.
//!
//! Background work (change-log follower, flushers, purge) stays on the runtime that calls
//! [`serve_per_core`].

use std::future::Future;
use std::net::SocketAddr;
use std::num::NonZeroUsize;

use axum::serve::Listener;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

use crate::server::{App, serve};

/// How often each worker's timer wheel wakes on its own (see `serve_per_core`).
const TIMER_ANCHOR: std::time::Duration = std::time::Duration::from_secs(1);

/// New connections waiting for their worker; the acceptor waits when a worker lags this far.
const HANDOFF_QUEUE: usize = 256;

/// Serves `app` on `listener` with `workers` threads until `shutdown` completes (or a worker
/// fails); then stops accepting, lets in-flight requests finish, and runs `finish` while the
/// workers' runtimes still run (a pooled database connection opened on a worker needs its
/// runtime to flush through).
///
/// # Errors
/// A worker thread or runtime cannot be started.
pub async fn serve_per_core<F: Future>(
    mut listener: TcpListener,
    workers: NonZeroUsize,
    app: App,
    shutdown: impl Future<Output = ()>,
    finish: F,
) -> std::io::Result<F::Output> {
    let local = listener.local_addr()?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let (exit_tx, exit_rx) = watch::channel(false);
    let (done_tx, mut done_rx) = mpsc::channel::<std::io::Result<()>>(workers.get());
    let mut handoffs = Vec::with_capacity(workers.get());
    let mut threads = Vec::with_capacity(workers.get());
    for n in 0..workers.get() {
        let (handoff_tx, handoff_rx) = mpsc::channel(HANDOFF_QUEUE);
        handoffs.push(handoff_tx);
        let handoff = Handoff { incoming: handoff_rx, local };
        let (app, done_tx) = (app.clone(), done_tx.clone());
        let (mut stop, mut exit) = (stop_rx.clone(), exit_rx.clone());
        let thread = std::thread::Builder::new().name(format!("keygate-worker-{n}")).spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(runtime) => runtime,
                Err(e) => {
                    let _ = done_tx.blocking_send(Err(e));
                    return;
                }
            };
            runtime.block_on(async move {
                // tokio's timer wheel wakes its own thread (an eventfd write, then one more turn
                // of epoll) whenever a timer is set earlier than the wheel's next wake, an empty
                // wheel included; every forwarded request sets one (the upstream timeout, 30 s
                // by default). A tick every second keeps the next wake closer than any request's
                // deadline: measured, 0.16 fewer system calls per forwarded request.
                tokio::spawn(async {
                    let mut tick = tokio::time::interval(TIMER_ANCHOR);
                    loop {
                        tick.tick().await;
                    }
                });
                let served = serve(handoff, app, async move {
                    let _ = stop.wait_for(|stop| *stop).await;
                })
                .await;
                let _ = done_tx.send(served).await;
                let _ = exit.wait_for(|exit| *exit).await;
            });
        });
        match thread {
            Ok(thread) => threads.push(thread),
            Err(e) => {
                let _ = stop_tx.send(true);
                let _ = exit_tx.send(true);
                return Err(e);
            }
        }
    }
    drop(done_tx);

    let accept = async {
        for worker in handoffs.iter().cycle() {
            let (stream, peer) = Listener::accept(&mut listener).await;
            match stream.into_std() {
                // A closed handoff means its worker is gone: stop serving.
                Ok(stream) => {
                    if worker.send((stream, peer)).await.is_err() {
                        return;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "could not hand a connection to a worker"),
            }
        }
    };
    let mut result = Ok(());
    let mut finished = 0;
    tokio::select! {
        () = shutdown => {},
        // Only ends when a worker is gone without saying why (it panicked).
        () = accept => result = Err(std::io::Error::other("a worker thread stopped unexpectedly")),
        Some(served) = done_rx.recv() => {
            finished += 1;
            result = served;
        }
    }
    drop(listener);
    drop(handoffs);
    let _ = stop_tx.send(true);
    while finished < workers.get() {
        let Some(served) = done_rx.recv().await else { break };
        finished += 1;
        result = result.and(served);
    }
    let output = finish.await;
    let _ = exit_tx.send(true);
    let _ = tokio::task::spawn_blocking(move || threads.into_iter().for_each(|t| drop(t.join()))).await;
    result.map(|()| output)
}

/// A worker's side of the handoff: the connections the acceptor gave it, registered with the
/// worker's own runtime as they are taken.
struct Handoff {
    incoming: mpsc::Receiver<(std::net::TcpStream, SocketAddr)>,
    local: SocketAddr,
}

impl Listener for Handoff {
    type Io = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (TcpStream, SocketAddr) {
        loop {
            // The acceptor has stopped: no more connections, ever (shutdown is under way).
            let Some((stream, peer)) = self.incoming.recv().await else {
                return std::future::pending().await;
            };
            match TcpStream::from_std(stream) {
                Ok(stream) => return (stream, peer),
                Err(e) => tracing::warn!(error = %e, "could not register a connection with its worker"),
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}
