//! Bytecode offset -> source line, in the three formats CPython used.
//! The tables come from the sampled process: malformed ones end the search
//! with the line reached so far, never a panic. Lines and addresses are
//! summed with checks: a line past i32 or an address past u32 is no line
//! (found by the python_tables fuzz target).

use super::layout::LineFormat;

/// The line of the instruction at byte offset `offset`, or None where the
/// table says the instruction has none.
pub fn line_for_offset(
    format: LineFormat,
    table: &[u8],
    first_line: i32,
    offset: u32,
) -> Option<u32> {
    let line = match format {
        LineFormat::Lnotab => lnotab(table, first_line, offset),
        LineFormat::Pairs => pairs(table, first_line, offset),
        LineFormat::Locations => locations(table, first_line, offset),
    }?;
    u32::try_from(line).ok()
}

/// 3.8, 3.9 (`Objects/lnotab_notes.txt`): (address delta, signed line delta).
fn lnotab(table: &[u8], first_line: i32, offset: u32) -> Option<i32> {
    let mut line = first_line;
    let mut address: u32 = 0;
    for pair in table.chunks_exact(2) {
        address = address.checked_add(u32::from(pair[0]))?;
        if address > offset {
            break;
        }
        line = line.checked_add(i32::from(pair[1] as i8))?;
    }
    Some(line)
}

/// 3.10: (address delta, signed line delta) per range; -128: no line.
fn pairs(table: &[u8], first_line: i32, offset: u32) -> Option<i32> {
    let mut line = first_line;
    let mut end: u32 = 0;
    let mut current = None;
    for pair in table.chunks_exact(2) {
        if end > offset {
            break;
        }
        end = end.checked_add(u32::from(pair[0]))?;
        let delta = pair[1] as i8;
        current = if delta == -128 {
            None
        } else {
            line = line.checked_add(i32::from(delta))?;
            Some(line)
        };
    }
    if end > offset {
        current
    } else {
        None
    }
}

/// 3.11+ (`Objects/locations.md`): entries of one start byte (bit 7 set,
/// code in bits 3-6, length-1 in code units in bits 0-2) and varints.
fn locations(table: &[u8], first_line: i32, offset: u32) -> Option<i32> {
    let mut line = first_line;
    let mut address: u32 = 0;
    let mut i = 0;
    while i < table.len() {
        let head = table[i];
        i += 1;
        if head & 0x80 == 0 {
            return None; // not at an entry start: malformed
        }
        let code = (head >> 3) & 0x0f;
        let length = (u32::from(head & 0x07) + 1) * 2;
        let line_here = match code {
            15 => None,
            14 => {
                line = line.checked_add(svarint(table, &mut i)?)?;
                varint(table, &mut i)?; // end line delta
                varint(table, &mut i)?; // start column
                varint(table, &mut i)?; // end column
                Some(line)
            }
            13 => {
                line = line.checked_add(svarint(table, &mut i)?)?;
                Some(line)
            }
            10..=12 => {
                line = line.checked_add(i32::from(code) - 10)?;
                i += 2; // start and end column
                Some(line)
            }
            _ => {
                i += 1; // column
                Some(line)
            }
        };
        address = address.checked_add(length)?;
        if address > offset {
            return line_here;
        }
    }
    None
}

fn varint(table: &[u8], i: &mut usize) -> Option<u32> {
    let mut value: u32 = 0;
    let mut shift = 0;
    loop {
        let byte = *table.get(*i)?;
        *i += 1;
        value |= u32::from(byte & 0x3f).checked_shl(shift)?;
        if byte & 0x40 == 0 {
            return Some(value);
        }
        shift += 6;
        if shift > 30 {
            return None;
        }
    }
}

fn svarint(table: &[u8], i: &mut usize) -> Option<i32> {
    let value = varint(table, i)?;
    let magnitude = (value >> 1) as i32;
    Some(if value & 1 != 0 {
        -magnitude
    } else {
        magnitude
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the python_tables fuzz target: a first line near i32::MAX
    /// plus a positive delta overflowed (a panic in debug builds).
    #[test]
    fn lines_past_i32_are_no_line() {
        let table = [0x02, 0x7f, 0x02, 0x7f];
        assert_eq!(
            line_for_offset(LineFormat::Lnotab, &table, i32::MAX - 1, 3),
            None
        );
        assert_eq!(
            line_for_offset(LineFormat::Pairs, &table, i32::MAX - 1, 1),
            None
        );
        // Locations: code 10-12 adds 0-2 lines (0x80 | 12 << 3, two columns).
        let locations = [0x80 | (12 << 3), 0, 0, 0x80 | (12 << 3), 0, 0];
        assert_eq!(
            line_for_offset(LineFormat::Locations, &locations, i32::MAX - 1, 3),
            None
        );
    }

    #[test]
    fn lnotab_adds_line_deltas_up_to_the_offset() {
        // 0..6 at line 10, 6..14 at 11, 14.. at 9.
        let table = [6, 1, 8, (-2i8) as u8];
        let at = |o| line_for_offset(LineFormat::Lnotab, &table, 10, o);
        assert_eq!(
            (at(0), at(5), at(6), at(13), at(14), at(100)),
            (Some(10), Some(10), Some(11), Some(11), Some(9), Some(9))
        );
    }

    #[test]
    fn pairs_cover_ranges_and_mark_missing_lines() {
        // 0..4 line 5 (+0 from first 5), 4..10 line 7, 10..12 no line.
        let table = [4, 0, 6, 2, 2, 0x80];
        let at = |o| line_for_offset(LineFormat::Pairs, &table, 5, o);
        assert_eq!(
            (at(0), at(3), at(4), at(9), at(10), at(12)),
            (Some(5), Some(5), Some(7), Some(7), None, None)
        );
    }

    /// An entry's first byte: code and length in code units.
    fn head(code: u8, units: u8) -> u8 {
        0x80 | (code << 3) | (units - 1)
    }

    #[test]
    fn locations_decode_every_entry_kind() {
        let table = [
            head(13, 1),
            0x02, // no columns, line +1, 1 unit (0..2)
            head(11, 2),
            4,
            9, // one-line form, line +1, 2 units (2..6)
            head(5, 1),
            7, // short form, same line, 1 unit (6..8)
            head(14, 1),
            0x05,
            0,
            1,
            2,           // long form, line -2, 1 unit (8..10)
            head(15, 1), // no location (10..12)
            head(13, 3),
            0x48,
            0x01, // varint continuation: +36 (12..18)
        ];
        let at = |o| line_for_offset(LineFormat::Locations, &table, 100, o);
        assert_eq!(at(0), Some(101));
        assert_eq!((at(2), at(5)), (Some(102), Some(102)));
        assert_eq!(at(7), Some(102));
        assert_eq!(at(8), Some(100));
        assert_eq!(at(10), None);
        assert_eq!(at(12), Some(136));
        assert_eq!(at(18), None);
    }

    #[test]
    fn garbage_tables_do_not_panic() {
        for table in [
            &[0x00u8][..],
            &[0xf0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f],
            &[0xff],
            &[1],
        ] {
            for format in [LineFormat::Lnotab, LineFormat::Pairs, LineFormat::Locations] {
                let _ = line_for_offset(format, table, 1, 40);
            }
        }
    }
}
