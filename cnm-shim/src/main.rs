use std::sync::Arc;

use cnm_shim::config::Config;
use cnm_shim::shim::Shim;
use cnm_shim::{info, ipam, listen, reconcile, router, server};

fn main() {
    let cfg = match Config::from_args(std::env::args().skip(1)) {
        Ok(Some(c)) => c,
        Ok(None) => return,
        Err(e) => {
            eprintln!("cnm-shim: {e}");
            std::process::exit(2);
        }
    };
    cnm_shim::log::set_debug(cfg.debug);
    if let Err(e) = run(cfg) {
        eprintln!("cnm-shim: {e}");
        std::process::exit(1);
    }
}

fn run(cfg: Config) -> cnm_shim::error::Result<()> {
    // Take the socket first: with socket activation dockerd's calls wait in its backlog while
    // the state is repaired.
    let (listener, activated) = listen::listener(&cfg.socket)?;
    let shim = Arc::new(Shim::new(cfg)?);
    reconcile::run(&shim);
    info!(
        "serving plugin {:?} on {} ({}), state in {}, plugins from {}",
        shim.cfg.name,
        shim.cfg.socket.display(),
        if activated {
            "socket-activated"
        } else {
            "bound"
        },
        shim.cfg.state_dir.display(),
        shim.cfg.cni_path
    );
    let sweeper = shim.clone();
    std::thread::spawn(move || loop {
        std::thread::sleep(std::time::Duration::from_secs(2));
        ipam::sweep_unclaimed(&sweeper);
    });
    let handler: server::Handler = Arc::new(move |req| router::handle(&shim, req));
    server::serve(listener, handler)
}
