use clap::Parser;
use tracer::cli::{Cli, Command};

// glibc's malloc showed as a fifth of the daemon's CPU under a connection
// storm (records, timelines and payload heads are short-lived).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let cli = Cli::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => fail(&anyhow::anyhow!("cannot start the runtime: {e}")),
    };
    let result = runtime.block_on(async {
        match cli.command {
            Some(Command::Demo { output }) => tracer::demo::run(output).await,
            None => tracer::app::trace(cli.trace).await,
        }
    });
    if let Err(e) = result {
        fail(&e);
    }
}

/// Every failure is one line and a non-zero exit, never a backtrace.
fn fail(e: &anyhow::Error) -> ! {
    eprintln!("tracer: {e:#}");
    std::process::exit(1);
}
