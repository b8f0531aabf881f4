//! `strata`: run a broker, administer topics, produce, consume and generate load.
//!
//! Every failure exits non-zero with a one-line reason on stderr.

mod acls;
mod bench;
mod bench_kafka;
mod cli;
mod users;

use clap::Parser;

// Large fetch and produce buffers come and go per request; mimalloc reuses their pages
// instead of mapping and zeroing fresh ones each time.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    strata::tune_process_memory();
    if let Err(e) = strata_failpoint::setup_from_env() {
        eprintln!("error: FAILPOINTS: {e}");
        std::process::exit(1);
    }
    let args = cli::Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = runtime.block_on(cli::run(args));
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    if let Err(e) = result {
        let mut msg = e.to_string();
        // Keep the reason on one line: append causes that add something.
        for cause in e.chain().skip(1) {
            let c = cause.to_string();
            if !msg.contains(&c) {
                msg.push_str(": ");
                msg.push_str(&c);
            }
        }
        eprintln!("error: {}", msg.replace('\n', " "));
        std::process::exit(1);
    }
}
