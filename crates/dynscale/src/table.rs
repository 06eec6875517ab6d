//! Plain-text tables for listings: left-aligned columns two spaces apart, sized to
//! their widest cell, so output reads well in a terminal and splits on whitespace.

use std::fmt::Write as _;

/// Renders `rows` under `headers`. Rows shorter than the header are padded with
/// empty cells; the last column is not padded, so lines carry no trailing spaces.
pub fn render(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate().take(widths.len()) {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = headers.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, width) in widths.iter().enumerate() {
            let cell = row.get(i).map_or("", String::as_str);
            if i + 1 == widths.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<width$}  ");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// A list of values as one cell: comma-separated, or `-` when empty.
pub fn list_cell(values: &[String]) -> String {
    if values.is_empty() {
        "-".to_owned()
    } else {
        values.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_to_the_widest_cell() {
        let rows = vec![
            vec!["tools-guard".to_owned(), "1.0.0".to_owned()],
            vec!["x".to_owned(), String::new()],
        ];
        let text = render(&["NAME", "ACTIVE"], &rows);
        assert_eq!(text, "NAME         ACTIVE\ntools-guard  1.0.0\nx\n");
    }

    #[test]
    fn empty_lists_show_a_dash() {
        assert_eq!(list_cell(&[]), "-");
        assert_eq!(list_cell(&["1.0.0".into(), "2.0.0".into()]), "1.0.0, 2.0.0");
    }
}
