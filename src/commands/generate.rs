//! `twinsite generate`: a synthetic cluster, jobs and policy written in the real formats.

use anyhow::bail;

use crate::cli::GenerateArgs;

pub fn run(args: &GenerateArgs) -> anyhow::Result<()> {
    // TEMP(generator pending): replaced once scheduler::generate lands.
    bail!(
        "generate is not available yet (out: {})",
        args.out.display()
    )
}
