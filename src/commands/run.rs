//! `twinsite run`: the long-running controller.

use crate::cli::RunArgs;

pub fn run(args: &RunArgs) -> anyhow::Result<()> {
    // TEMP(controller pending): the controller helper replaces this file.
    anyhow::bail!("run is not available yet (config: {:?})", args.config)
}
