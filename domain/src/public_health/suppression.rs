//! Primary and complementary cell suppression for a two-way count table published with its
//! row totals, column totals and grand total.
//!
//! The table and its margins are seen as one (R+1)×(C+1) grid: row `R` holds the column
//! totals, column `C` the row totals, and `(R, C)` the grand total. Every row and every column
//! of that grid (a *line*) is a sum: its cells add up to its total. A line with exactly one
//! withheld entry gives that entry away by subtraction, so complementary suppression withholds
//! one more entry in each such line until no line has exactly one.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Counts by row and column, e.g. patients by age band and sex, before suppression.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CountTable<R, C> {
    rows: Vec<R>,
    columns: Vec<C>,
    counts: Vec<Vec<u64>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TableError {
    #[error("{labels} row labels but {rows} rows of counts")]
    RowCount { labels: usize, rows: usize },
    #[error("row {row} has {found} counts, expected one per column: {expected}")]
    RowLength {
        row: usize,
        expected: usize,
        found: usize,
    },
    #[error("row label {row} repeats an earlier one")]
    DuplicateRowLabel { row: usize },
    #[error("column label {column} repeats an earlier one")]
    DuplicateColumnLabel { column: usize },
    #[error("the counts add up to more than a u64 holds")]
    TotalOverflow,
    #[error("record {record} has a row label that is not among the table's rows")]
    UnknownRowLabel { record: usize },
    #[error("record {record} has a column label that is not among the table's columns")]
    UnknownColumnLabel { record: usize },
}

impl<R: PartialEq, C: PartialEq> CountTable<R, C> {
    /// `counts[r][c]` is the count for `rows[r]` and `columns[c]`. Labels must be distinct.
    pub fn new(rows: Vec<R>, columns: Vec<C>, counts: Vec<Vec<u64>>) -> Result<Self, TableError> {
        if counts.len() != rows.len() {
            return Err(TableError::RowCount {
                labels: rows.len(),
                rows: counts.len(),
            });
        }
        if let Some((row, found)) = counts
            .iter()
            .map(Vec::len)
            .enumerate()
            .find(|&(_, len)| len != columns.len())
        {
            return Err(TableError::RowLength {
                row,
                expected: columns.len(),
                found,
            });
        }
        if let Some(row) = first_repeat(&rows) {
            return Err(TableError::DuplicateRowLabel { row });
        }
        if let Some(column) = first_repeat(&columns) {
            return Err(TableError::DuplicateColumnLabel { column });
        }
        // Every total is at most the grand total, so checking that one is enough.
        counts
            .iter()
            .flatten()
            .try_fold(0u64, |sum, &c| sum.checked_add(c))
            .ok_or(TableError::TotalOverflow)?;
        Ok(Self {
            rows,
            columns,
            counts,
        })
    }
}

fn first_repeat<T: PartialEq>(labels: &[T]) -> Option<usize> {
    (1..labels.len()).find(|&i| labels[..i].contains(&labels[i]))
}

impl<R, C> CountTable<R, C> {
    pub fn rows(&self) -> &[R] {
        &self.rows
    }

    pub fn columns(&self) -> &[C] {
        &self.columns
    }

    /// The count at row `r`, column `c`. Panics if either is out of range.
    pub fn count(&self, r: usize, c: usize) -> u64 {
        self.counts[r][c]
    }

    pub fn row_total(&self, r: usize) -> u64 {
        self.counts[r].iter().sum()
    }

    pub fn column_total(&self, c: usize) -> u64 {
        self.counts.iter().map(|row| row[c]).sum()
    }

    pub fn grand_total(&self) -> u64 {
        self.counts.iter().flatten().sum()
    }
}

/// Why an entry is withheld.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// The count itself is above zero and under the threshold.
    Primary,
    /// The count is withheld so that a primary one cannot be worked out by subtraction.
    Complementary,
}

/// One published entry: a count, or the reason it is withheld. A withheld entry carries no
/// trace of its count. Serialised as `{"shown": 12}` or `{"suppressed": "primary"}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cell {
    Shown(u64),
    Suppressed(Reason),
}

impl Cell {
    /// The count, or `None` when withheld.
    pub const fn value(&self) -> Option<u64> {
        match self {
            Cell::Shown(count) => Some(*count),
            Cell::Suppressed(_) => None,
        }
    }

    pub const fn is_suppressed(&self) -> bool {
        matches!(self, Cell::Suppressed(_))
    }

    pub const fn reason(&self) -> Option<Reason> {
        match self {
            Cell::Shown(_) => None,
            Cell::Suppressed(reason) => Some(*reason),
        }
    }
}

/// A table as it may be published: every cell and total shown or withheld.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SuppressedTable<R, C> {
    rows: Vec<R>,
    columns: Vec<C>,
    min_cell: u64,
    cells: Vec<Vec<Cell>>,
    row_totals: Vec<Cell>,
    column_totals: Vec<Cell>,
    grand_total: Cell,
}

impl<R, C> SuppressedTable<R, C> {
    pub fn rows(&self) -> &[R] {
        &self.rows
    }

    pub fn columns(&self) -> &[C] {
        &self.columns
    }

    /// The threshold the table was suppressed with.
    pub const fn min_cell(&self) -> u64 {
        self.min_cell
    }

    /// The cell at row `r`, column `c`; `.value()` reads it as `Option<u64>`. Panics if either
    /// is out of range.
    pub fn cell(&self, r: usize, c: usize) -> Cell {
        self.cells[r][c]
    }

    pub fn row_total(&self, r: usize) -> Cell {
        self.row_totals[r]
    }

    pub fn column_total(&self, c: usize) -> Cell {
        self.column_totals[c]
    }

    pub const fn grand_total(&self) -> Cell {
        self.grand_total
    }
}

/// Withholds every entry (cell or total) with `0 < count < min_cell`, then, until none is
/// left, every line of the extended grid with exactly one withheld entry gets a second one:
/// its shown entry with the smallest non-zero count, a cell before a total, the first in the
/// line on a tie, and a zero only if nothing else is left. Lines are visited rows first (top to
/// bottom, the totals row last), then columns (left to right, the totals column last), and the
/// visits repeat until one changes nothing.
///
/// `min_cell` 0 or 1 withholds nothing.
pub fn suppress<R: Clone, C: Clone>(
    table: &CountTable<R, C>,
    min_cell: u64,
) -> SuppressedTable<R, C> {
    let mut grid = Grid::of(table);
    grid.mark_primary(min_cell);
    while grid.complementary_pass() {}
    grid.publish(table, min_cell)
}

/// Builds and suppresses one table per group from flat records `(group, row, column, count)`,
/// e.g. group = (week, region, category), row = age band, column = sex. Every table has all of
/// `rows` and `columns`, in that order, so a missing combination is a shown zero. Records for
/// the same group, row and column add up.
pub fn suppress_groups<G, R, C>(
    records: impl IntoIterator<Item = (G, R, C, u64)>,
    rows: &[R],
    columns: &[C],
    min_cell: u64,
) -> Result<BTreeMap<G, SuppressedTable<R, C>>, TableError>
where
    G: Ord,
    R: Clone + PartialEq,
    C: Clone + PartialEq,
{
    // Checks the labels once, and is the shape every group's table copies.
    let empty = CountTable::new(
        rows.to_vec(),
        columns.to_vec(),
        vec![vec![0; columns.len()]; rows.len()],
    )?;
    let mut counts_by_group: BTreeMap<G, Vec<Vec<u64>>> = BTreeMap::new();
    for (record, (group, row, column, count)) in records.into_iter().enumerate() {
        let r = rows
            .iter()
            .position(|label| *label == row)
            .ok_or(TableError::UnknownRowLabel { record })?;
        let c = columns
            .iter()
            .position(|label| *label == column)
            .ok_or(TableError::UnknownColumnLabel { record })?;
        let counts = counts_by_group
            .entry(group)
            .or_insert_with(|| empty.counts.clone());
        counts[r][c] = counts[r][c]
            .checked_add(count)
            .ok_or(TableError::TotalOverflow)?;
    }
    counts_by_group
        .into_iter()
        .map(|(group, counts)| {
            let table = CountTable::new(rows.to_vec(), columns.to_vec(), counts)?;
            Ok((group, suppress(&table, min_cell)))
        })
        .collect()
}

/// The table with its margins as one grid, and which entries are withheld so far.
#[derive(Debug)]
struct Grid {
    /// `(R+1)` rows of `(C+1)` counts; never empty (the totals row and column always exist).
    values: Vec<Vec<u64>>,
    marks: Vec<Vec<Option<Reason>>>,
}

/// A position `(row, column)` in the grid.
type Position = (usize, usize);

impl Grid {
    fn of<R, C>(table: &CountTable<R, C>) -> Grid {
        let mut values: Vec<Vec<u64>> = table
            .counts
            .iter()
            .enumerate()
            .map(|(r, row)| {
                let mut line = row.clone();
                line.push(table.row_total(r));
                line
            })
            .collect();
        let mut totals_row: Vec<u64> = (0..table.columns.len())
            .map(|c| table.column_total(c))
            .collect();
        totals_row.push(table.grand_total());
        values.push(totals_row);
        let marks = values.iter().map(|row| vec![None; row.len()]).collect();
        Grid { values, marks }
    }

    fn height(&self) -> usize {
        self.values.len()
    }

    fn width(&self) -> usize {
        self.values[0].len()
    }

    /// Every additive line, rows then columns; each line's last position is its total.
    fn lines(&self) -> Vec<Vec<Position>> {
        let rows = (0..self.height()).map(|i| (0..self.width()).map(|j| (i, j)).collect());
        let columns = (0..self.width()).map(|j| (0..self.height()).map(|i| (i, j)).collect());
        rows.chain(columns).collect()
    }

    fn is_suppressed(&self, (i, j): Position) -> bool {
        self.marks[i][j].is_some()
    }

    fn mark_primary(&mut self, min_cell: u64) {
        for (values, marks) in self.values.iter().zip(&mut self.marks) {
            for (&count, mark) in values.iter().zip(marks) {
                if 0 < count && count < min_cell {
                    *mark = Some(Reason::Primary);
                }
            }
        }
    }

    /// Visits every line once and gives each line with exactly one withheld entry a second one.
    /// Returns whether anything was withheld.
    fn complementary_pass(&mut self) -> bool {
        let mut changed = false;
        for line in self.lines() {
            let withheld = line.iter().filter(|&&p| self.is_suppressed(p)).count();
            if withheld != 1 {
                continue;
            }
            let total_index = line.len() - 1;
            let complement = line
                .iter()
                .enumerate()
                .filter(|&(_, &p)| !self.is_suppressed(p))
                .min_by_key(|&(k, &(i, j))| {
                    let count = self.values[i][j];
                    (count == 0, count, k == total_index, k)
                })
                .map(|(_, &p)| p);
            // A line has at least two entries, so one is still shown.
            if let Some((i, j)) = complement {
                self.marks[i][j] = Some(Reason::Complementary);
                changed = true;
            }
        }
        changed
    }

    fn publish<R: Clone, C: Clone>(
        &self,
        table: &CountTable<R, C>,
        min_cell: u64,
    ) -> SuppressedTable<R, C> {
        let entry = |(i, j): Position| match self.marks[i][j] {
            Some(reason) => Cell::Suppressed(reason),
            None => Cell::Shown(self.values[i][j]),
        };
        let (last_row, last_column) = (self.height() - 1, self.width() - 1);
        SuppressedTable {
            rows: table.rows.clone(),
            columns: table.columns.clone(),
            min_cell,
            cells: (0..last_row)
                .map(|i| (0..last_column).map(|j| entry((i, j))).collect())
                .collect(),
            row_totals: (0..last_row).map(|i| entry((i, last_column))).collect(),
            column_totals: (0..last_column).map(|j| entry((last_row, j))).collect(),
            grand_total: entry((last_row, last_column)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::public_health::AgeBand;
    use crate::values::Sex;
    use proptest::prelude::*;

    fn table(counts: &[&[u64]]) -> CountTable<usize, usize> {
        let width = counts.first().map_or(0, |row| row.len());
        CountTable::new(
            (0..counts.len()).collect(),
            (0..width).collect(),
            counts.iter().map(|row| row.to_vec()).collect(),
        )
        .unwrap()
    }

    /// The published table with its margins as a grid of words: a count, `P` for primary, `C`
    /// for complementary. The last column is the row totals, the last row the column totals.
    fn render<R, C>(t: &SuppressedTable<R, C>) -> Vec<Vec<String>> {
        extended(t)
            .iter()
            .map(|row| {
                row.iter()
                    .map(|cell| match cell {
                        Cell::Shown(count) => count.to_string(),
                        Cell::Suppressed(Reason::Primary) => "P".to_owned(),
                        Cell::Suppressed(Reason::Complementary) => "C".to_owned(),
                    })
                    .collect()
            })
            .collect()
    }

    fn words(grid: &[&[&str]]) -> Vec<Vec<String>> {
        grid.iter()
            .map(|row| row.iter().map(|w| (*w).to_owned()).collect())
            .collect()
    }

    /// The published entries as the (R+1)×(C+1) grid, read through the public accessors.
    fn extended<R, C>(t: &SuppressedTable<R, C>) -> Vec<Vec<Cell>> {
        let (rows, columns) = (t.rows().len(), t.columns().len());
        let mut grid: Vec<Vec<Cell>> = (0..rows)
            .map(|r| {
                let mut line: Vec<Cell> = (0..columns).map(|c| t.cell(r, c)).collect();
                line.push(t.row_total(r));
                line
            })
            .collect();
        let mut totals: Vec<Cell> = (0..columns).map(|c| t.column_total(c)).collect();
        totals.push(t.grand_total());
        grid.push(totals);
        grid
    }

    /// How many entries each line (rows, then columns) of the published grid withholds.
    fn withheld_per_line(grid: &[Vec<Cell>]) -> Vec<usize> {
        let rows = grid
            .iter()
            .map(|row| row.iter().filter(|cell| cell.is_suppressed()).count());
        let columns =
            (0..grid[0].len()).map(|j| grid.iter().filter(|row| row[j].is_suppressed()).count());
        rows.chain(columns).collect()
    }

    fn primary_only<R: Clone, C: Clone>(
        t: &CountTable<R, C>,
        min_cell: u64,
    ) -> SuppressedTable<R, C> {
        let mut grid = Grid::of(t);
        grid.mark_primary(min_cell);
        grid.publish(t, min_cell)
    }

    #[test]
    fn a_table_with_nothing_under_the_threshold_is_shown_whole() {
        let t = table(&[&[10, 12], &[15, 0]]);
        let published = suppress(&t, 5);
        assert_eq!(
            render(&published),
            words(&[&["10", "12", "22"], &["15", "0", "15"], &["25", "12", "37"]])
        );
        assert_eq!(published.cell(1, 1).value(), Some(0));
        assert_eq!(published.grand_total().value(), Some(37));
    }

    #[test]
    fn a_small_cell_hidden_alone_leaks_through_its_totals_so_a_rectangle_is_hidden() {
        //        F   M | total
        //  A    12   3 |   15
        //  B    10  14 |   24
        //  C     8   9 |   17
        //  tot  30  26 |   56
        let t = table(&[&[12, 3], &[10, 14], &[8, 9]]);

        // Primary suppression alone hides A×M and nothing else...
        let leaky = primary_only(&t, 5);
        assert_eq!(
            render(&leaky),
            words(&[
                &["12", "P", "15"],
                &["10", "14", "24"],
                &["8", "9", "17"],
                &["30", "26", "56"],
            ])
        );
        // ...and anyone can work it out: from its row, and again from its column.
        let v = |cell: Cell| cell.value().unwrap();
        assert_eq!(v(leaky.row_total(0)) - v(leaky.cell(0, 0)), 3);
        assert_eq!(
            v(leaky.column_total(1)) - v(leaky.cell(1, 1)) - v(leaky.cell(2, 1)),
            3
        );

        // Row A takes its smallest other entry (12, before the total 15); column F then takes
        // C×F (8 < 10 < 30) and column M takes C×M (9 < 14 < 26): row C now has two, done.
        let published = suppress(&t, 5);
        assert_eq!(
            render(&published),
            words(&[
                &["C", "P", "15"],
                &["10", "14", "24"],
                &["C", "C", "17"],
                &["30", "26", "56"],
            ])
        );
        assert_eq!(published.cell(0, 1).reason(), Some(Reason::Primary));
        assert_eq!(published.cell(0, 0).reason(), Some(Reason::Complementary));
        assert_eq!(published.cell(0, 1).value(), None);
    }

    #[test]
    fn a_small_row_total_is_hidden_and_needs_a_complement_in_the_totals_column() {
        //        F   M | total
        //  A     2   1 |    3   <- every entry of row A is under 5, its total too
        //  B    10  14 |   24
        //  C     8   9 |   17
        //  tot  20  24 |   44
        let t = table(&[&[2, 1], &[10, 14], &[8, 9]]);

        // With only row A hidden, the totals column gives its total away: 44 - 24 - 17 = 3.
        let leaky = primary_only(&t, 5);
        assert_eq!(leaky.row_total(0), Cell::Suppressed(Reason::Primary));
        let v = |cell: Cell| cell.value().unwrap();
        assert_eq!(
            v(leaky.grand_total()) - v(leaky.row_total(1)) - v(leaky.row_total(2)),
            3
        );

        // Columns F and M each take their row-C cell (8 and 9 are the smallest), and the totals
        // column takes row C's total (17 < 24 < 44).
        let published = suppress(&t, 5);
        assert_eq!(
            render(&published),
            words(&[
                &["P", "P", "P"],
                &["10", "14", "24"],
                &["C", "C", "C"],
                &["20", "24", "44"],
            ])
        );
    }

    #[test]
    fn a_complement_that_leaves_another_line_with_one_hidden_entry_forces_another_round() {
        //        a   b    c | total
        //  r0    2   7   30 |   39
        //  r1   40   8   60 |  108
        //  r2    9  50   70 |  129
        //  tot  51  65  160 |  276
        let t = table(&[&[2, 7, 30], &[40, 8, 60], &[9, 50, 70]]);

        // Round one: row r0 takes 7 (r0×b); column a takes 9 (r2×a); column b, now with r0×b
        // hidden, takes 8 (r1×b). That leaves rows r1 and r2 with one hidden entry each.
        let mut grid = Grid::of(&t);
        grid.mark_primary(5);
        assert!(grid.complementary_pass());
        let after_one_round = grid.publish(&t, 5);
        assert_eq!(
            render(&after_one_round),
            words(&[
                &["P", "C", "30", "39"],
                &["40", "C", "60", "108"],
                &["C", "50", "70", "129"],
                &["51", "65", "160", "276"],
            ])
        );
        // Row r1 would give r1×b away: 108 - 40 - 60 = 8.
        let v = |cell: Cell| cell.value().unwrap();
        assert_eq!(
            v(after_one_round.row_total(1))
                - v(after_one_round.cell(1, 0))
                - v(after_one_round.cell(1, 2)),
            8
        );

        // Round two: row r1 takes 40 (r1×a), row r2 takes 50 (r2×b). Round three changes
        // nothing.
        assert!(grid.complementary_pass());
        assert!(!grid.complementary_pass());
        let published = suppress(&t, 5);
        assert_eq!(
            render(&published),
            words(&[
                &["P", "C", "30", "39"],
                &["C", "C", "60", "108"],
                &["C", "C", "70", "129"],
                &["51", "65", "160", "276"],
            ])
        );
        assert_eq!(published, grid.publish(&t, 5));
    }

    #[test]
    fn a_threshold_of_zero_or_one_hides_nothing() {
        let t = table(&[&[1, 0, 2], &[0, 1, 1]]);
        let expected = words(&[
            &["1", "0", "2", "3"],
            &["0", "1", "1", "2"],
            &["1", "1", "3", "5"],
        ]);
        assert_eq!(render(&suppress(&t, 0)), expected);
        assert_eq!(render(&suppress(&t, 1)), expected);
        // At 3 every 1 and 2 goes; the totals column is then left with row 1's total alone
        // (5 - 3 = 2), so row 0's total 3 goes with it.
        assert_eq!(
            render(&suppress(&t, 3)),
            words(&[
                &["P", "0", "P", "C"],
                &["0", "P", "P", "P"],
                &["P", "P", "3", "5"]
            ])
        );
    }

    #[test]
    fn zeros_are_shown_even_next_to_a_hidden_count() {
        //  3  0 |  3      every 3 is under 5: primary; the zeros stay shown
        //  0  9 |  9
        //  3  9 | 12
        // The totals row would give 12 - 9 = 3 away, so it takes 9; column b and the totals
        // column, each left with one hidden entry, take their other 9 (a zero is never taken
        // while a count is left).
        let t = table(&[&[3, 0], &[0, 9]]);
        assert_eq!(
            render(&suppress(&t, 5)),
            words(&[&["P", "0", "P"], &["0", "C", "C"], &["P", "C", "12"]])
        );
    }

    #[test]
    fn a_tie_goes_to_the_first_in_the_line() {
        //  2  4  4 | 10
        //  0  0  6 |  6
        //  2  4 10 | 16
        // Row 0 has two 4s and takes the first. The totals row takes column b's total (4 < 10
        // < 16). Columns a and b then hold two hidden entries each.
        let t = table(&[&[2, 4, 4], &[0, 0, 6]]);
        assert_eq!(
            render(&suppress(&t, 3)),
            words(&[
                &["P", "C", "4", "10"],
                &["0", "0", "6", "6"],
                &["P", "C", "10", "16"]
            ])
        );
    }

    #[test]
    fn a_zero_is_passed_over_for_a_larger_count() {
        //  2  5 |  7
        //  9  0 |  9
        // 11  5 | 16
        // Round one: row 0 takes 5; column a takes 9; column b, left with the zero and its total
        // 5, takes the total. Round two: row 1, left with the zero and its total 9, takes the
        // total; the totals row takes 11; the totals column takes 7.
        let t = table(&[&[2, 5], &[9, 0]]);
        assert_eq!(
            render(&suppress(&t, 3)),
            words(&[&["P", "C", "C"], &["C", "0", "C"], &["C", "C", "16"]])
        );
    }

    #[test]
    fn a_withheld_entry_serialises_without_its_count() {
        let published = suppress(&table(&[&[12, 3], &[10, 14], &[8, 9]]), 5);
        let json = serde_json::to_value(&published).unwrap();
        assert_eq!(
            json["cells"][0],
            serde_json::json!([{"suppressed": "complementary"}, {"suppressed": "primary"}])
        );
        assert_eq!(json["row_totals"][0], serde_json::json!({"shown": 15}));
        assert_eq!(json["min_cell"], 5);
    }

    #[test]
    fn a_table_of_the_wrong_shape_is_refused() {
        assert_eq!(
            CountTable::new(vec![0, 1], vec![0], vec![vec![1]]).unwrap_err(),
            TableError::RowCount { labels: 2, rows: 1 }
        );
        assert_eq!(
            CountTable::new(vec![0, 1], vec![0, 1], vec![vec![1, 2], vec![3]]).unwrap_err(),
            TableError::RowLength {
                row: 1,
                expected: 2,
                found: 1
            }
        );
        assert_eq!(
            CountTable::new(vec![0, 0], vec![0], vec![vec![1], vec![2]]).unwrap_err(),
            TableError::DuplicateRowLabel { row: 1 }
        );
        assert_eq!(
            CountTable::new(vec![0], vec![5, 6, 5], vec![vec![1, 2, 3]]).unwrap_err(),
            TableError::DuplicateColumnLabel { column: 2 }
        );
        assert_eq!(
            CountTable::new(vec![0, 1], vec![0], vec![vec![u64::MAX], vec![1]]).unwrap_err(),
            TableError::TotalOverflow
        );
    }

    #[test]
    fn groups_become_one_full_table_each_with_repeated_records_added() {
        let bands = [AgeBand::Age0To4, AgeBand::Age5To14];
        let sexes = [Sex::Female, Sex::Male];
        let records = vec![
            ("2026-W53/KE-30/J45", AgeBand::Age0To4, Sex::Female, 10),
            ("2026-W53/KE-30/J45", AgeBand::Age0To4, Sex::Male, 3),
            ("2026-W53/KE-30/J45", AgeBand::Age5To14, Sex::Female, 6),
            ("2026-W53/KE-30/J45", AgeBand::Age5To14, Sex::Female, 4),
            ("2026-W53/KE-30/J45", AgeBand::Age5To14, Sex::Male, 20),
            ("2026-W53/KE-30/E11", AgeBand::Age5To14, Sex::Male, 8),
        ];
        let tables = suppress_groups(records, &bands, &sexes, 5).unwrap();
        assert_eq!(tables.len(), 2);

        let asthma = &tables["2026-W53/KE-30/J45"];
        assert_eq!(asthma.rows(), &bands);
        assert_eq!(asthma.columns(), &sexes);
        let by_hand = table(&[&[10, 3], &[10, 20]]);
        assert_eq!(render(asthma), render(&suppress(&by_hand, 5)));
        assert_eq!(
            render(asthma),
            words(&[&["C", "P", "13"], &["C", "C", "30"], &["20", "23", "43"]])
        );

        // Combinations with no record are zeros, shown.
        let diabetes = &tables["2026-W53/KE-30/E11"];
        assert_eq!(
            render(diabetes),
            words(&[&["0", "0", "0"], &["0", "8", "8"], &["0", "8", "8"]])
        );
    }

    #[test]
    fn a_record_outside_the_listed_rows_or_columns_is_refused() {
        let bands = [AgeBand::Age0To4];
        let sexes = [Sex::Female];
        let unknown_band = vec![
            ("g", AgeBand::Age0To4, Sex::Female, 1),
            ("g", AgeBand::Age85Plus, Sex::Female, 1),
        ];
        assert_eq!(
            suppress_groups(unknown_band, &bands, &sexes, 5).unwrap_err(),
            TableError::UnknownRowLabel { record: 1 }
        );
        let unknown_sex = vec![("g", AgeBand::Age0To4, Sex::Other, 1)];
        assert_eq!(
            suppress_groups(unknown_sex, &bands, &sexes, 5).unwrap_err(),
            TableError::UnknownColumnLabel { record: 0 }
        );
    }

    fn counts_and_threshold() -> impl Strategy<Value = (Vec<Vec<u64>>, u64)> {
        (1usize..=5, 1usize..=5).prop_flat_map(|(rows, columns)| {
            (
                prop::collection::vec(prop::collection::vec(0u64..30, columns), rows),
                1u64..15,
            )
        })
    }

    proptest! {
        #[test]
        fn suppression_leaves_no_small_count_and_no_line_with_one_hidden_entry(
            (counts, min_cell) in counts_and_threshold()
        ) {
            let t = CountTable::new(
                (0..counts.len()).collect::<Vec<_>>(),
                (0..counts[0].len()).collect::<Vec<_>>(),
                counts,
            )
            .unwrap();
            let published = suppress(&t, min_cell);
            let truth = Grid::of(&t).values;
            let grid = extended(&published);

            for (i, row) in grid.iter().enumerate() {
                for (j, cell) in row.iter().enumerate() {
                    let count = truth[i][j];
                    let eligible = 0 < count && count < min_cell;
                    match cell {
                        Cell::Shown(shown) => {
                            prop_assert_eq!(*shown, count);
                            prop_assert!(!eligible, "shown small count {} at {:?}", count, (i, j));
                        }
                        Cell::Suppressed(Reason::Primary) => prop_assert!(eligible),
                        Cell::Suppressed(Reason::Complementary) => prop_assert!(!eligible),
                    }
                }
            }
            for (line, withheld) in withheld_per_line(&grid).into_iter().enumerate() {
                prop_assert!(withheld != 1, "line {} has one hidden entry: {:?}", line, render(&published));
            }
            prop_assert_eq!(&suppress(&t, min_cell), &published);
        }
    }
}
