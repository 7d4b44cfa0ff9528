//! SVG flame graphs, rendered by inferno from collapsed stacks.

use std::io::Write;

use inferno::flamegraph::{self, Options};

use super::{collapsed_lines, EncodeError};
use crate::profile::Profile;

pub fn write_svg(profile: &Profile, title: &str, out: &mut impl Write) -> Result<(), EncodeError> {
    let lines = collapsed_lines(profile);
    let mut options = Options::default();
    options.title = title.to_owned();
    options.count_name = profile.weight_unit().to_owned();
    if lines.is_empty() {
        // inferno refuses empty input; an empty profile still gets a file.
        write!(out, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"600\" height=\"40\"><text x=\"10\" y=\"25\">{title}: no samples</text></svg>")?;
        return Ok(());
    }
    flamegraph::from_lines(&mut options, lines.iter().map(String::as_str), out)
        .map_err(EncodeError::FlameGraph)
}
