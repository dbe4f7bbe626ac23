//! `twinsite run`: the long-running controller.

use crate::cli::RunArgs;

pub fn run(args: &RunArgs) -> anyhow::Result<()> {
    // The controller loop, config file and HTTP API are issue 3's remaining work; say so
    // plainly rather than start something that does nothing.
    anyhow::bail!(
        "twinsite run is not built yet (config: {}): the controller loop and HTTP API are \
         pending; see README.md, section Status",
        args.config
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "embedded default".into())
    )
}
