//! The floor of keygate's HTTP stack, for `bench/data_plane.sh`: a reverse proxy on the same
//! hyper server, hyper client, Tokio runtimes and threading as `keygate serve` (one acceptor
//! handing connections in turn to one current-thread runtime per core, keygate's upstream pool
//! with its connections per thread, `keygate_gateway::upstream::Pool`), doing nothing else: no
//! router, no middleware, no key, no limit, no log.
//! keygate's gateway over this is what keygate's own work costs; this over nginx is what the
//! stack costs.
//!
//! Usage: `bare_proxy LISTEN_ADDR UPSTREAM_ADDR [WORKERS]` (e.g. `127.0.0.1:19400
//! 127.0.0.1:19100 2`). Forwards every request, headers and body as they came (`Host` and
//! hop-by-hop headers aside), to `http://UPSTREAM_ADDR` with the same path and query.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::CONNECTION;
use hyper::http::uri::Authority;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use keygate_gateway::upstream::Pool;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

type Body = BoxBody<Bytes, hyper::Error>;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: bare_proxy LISTEN_ADDR UPSTREAM_ADDR [WORKERS]";
    let listen: SocketAddr = args.next().ok_or(usage)?.parse()?;
    let upstream = args.next().ok_or(usage)?;
    let workers: usize = args.next().map_or(Ok(2), |w| w.parse())?;

    let upstream: Authority = upstream.parse()?;
    // One pool for the process (it keeps each thread's connections apart), alive until exit.
    let pool: &'static Pool<Incoming> =
        Box::leak(Box::new(Pool::new(&upstream, Duration::from_secs(5), Duration::from_secs(60))));
    let mut handoffs = Vec::with_capacity(workers);
    for _ in 0..workers {
        let (tx, mut rx) = mpsc::channel::<std::net::TcpStream>(256);
        handoffs.push(tx);
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
            runtime.block_on(async move {
                while let Some(stream) = rx.recv().await {
                    let Ok(stream) = tokio::net::TcpStream::from_std(stream) else { continue };
                    let _ = stream.set_nodelay(true);
                    tokio::spawn(async move {
                        let service = service_fn(move |req| forward(pool, req));
                        let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
                    });
                }
            });
        });
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async move {
        let listener = TcpListener::bind(listen).await?;
        for worker in handoffs.iter().cycle() {
            let (stream, _) = listener.accept().await?;
            if worker.send(stream.into_std()?).await.is_err() {
                break;
            }
        }
        Ok(())
    })
}

async fn forward(pool: &Pool<Incoming>, mut req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    // The same path and query, origin-form; the pool sets `Host`.
    if let Some(path) = req.uri().path_and_query().cloned() {
        *req.uri_mut() = path.into();
    } else {
        return Ok(status(StatusCode::BAD_REQUEST));
    }
    req.headers_mut().remove(CONNECTION);
    Ok(match pool.send(req).await {
        Ok(response) => response.map(|b| b.boxed()),
        Err(_) => status(StatusCode::BAD_GATEWAY),
    })
}

fn status(code: StatusCode) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::new()).map_err(|never| match never {}).boxed());
    *response.status_mut() = code;
    response
}
