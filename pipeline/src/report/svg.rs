//! Charts as inline SVG, written by hand rather than through a plotting crate: every
//! mark carries its value in `data-*` attributes (so a test, or a reader's tools, can
//! read the data back from the chart), every chart has a `<title>` and a `<desc>` text
//! alternative, and text is left to the browser (no font files or font metrics, so the
//! output is the same on every machine). The palette is Okabe & Ito's, safe for the
//! common colour-vision deficiencies.

use crate::outputs::report::esc;
use std::fmt::Write;

/// Okabe-Ito: blue, orange, bluish green, vermillion, reddish purple, sky blue, grey.
pub const PALETTE: [&str; 7] = [
    "#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#666666",
];

/// A number as the chart's attributes hold it: enough digits to compare with the
/// run's JSON to 1e-9.
pub fn attr(v: f64) -> String {
    if v.is_finite() {
        format!("{v}")
    } else {
        "NaN".into()
    }
}

/// A linear scale from data to pixels.
#[derive(Clone, Copy)]
struct Scale {
    lo: f64,
    hi: f64,
    from: f64,
    to: f64,
}

impl Scale {
    fn at(&self, v: f64) -> f64 {
        let span = if self.hi > self.lo {
            self.hi - self.lo
        } else {
            1.0
        };
        self.from + (v.clamp(self.lo, self.hi) - self.lo) / span * (self.to - self.from)
    }
}

/// About five round ticks over [lo, hi].
fn ticks(lo: f64, hi: f64) -> Vec<f64> {
    if !(hi > lo) {
        return vec![lo];
    }
    let raw = (hi - lo) / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(raw);
    // From integer multiples, rounded to the step's digits, so 3 x 0.2 is 0.6.
    let digits = (-step.log10().floor()).max(0.0) as i32 + 1;
    let round = |v: f64| {
        let m = 10f64.powi(digits);
        (v * m).round() / m
    };
    let first = (lo / step).ceil() as i64;
    (first..)
        .map(|k| round(k as f64 * step))
        .take_while(|t| *t <= hi + step * 1e-9)
        .collect()
}

fn tick_label(v: f64) -> String {
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" { "0".into() } else { s.into() }
}

/// What the y axis holds: numbers, or one row per label (forest plots, bars).
pub enum YAxis {
    Numbers { label: String, lo: f64, hi: f64 },
    Rows(Vec<String>),
}

/// One chart: axes, marks and a legend, drawn into an SVG.
pub struct Chart {
    id: String,
    title: String,
    desc: String,
    width: f64,
    height: f64,
    x: Scale,
    x_label: String,
    y: Scale,
    y_axis: YAxis,
    left: f64,
    marks: String,
    legend: Vec<(String, &'static str, bool)>,
}

const ROW_HEIGHT: f64 = 22.0;

impl Chart {
    /// `id` is unique in the page; `desc` is the text alternative (what the chart
    /// shows, in words and numbers).
    pub fn new(id: &str, title: &str, desc: &str, x: (&str, f64, f64), y: YAxis) -> Self {
        let (left, height) = match &y {
            YAxis::Numbers { .. } => (60.0, 320.0),
            YAxis::Rows(rows) => {
                let longest = rows.iter().map(|r| r.chars().count()).max().unwrap_or(4);
                (
                    (longest as f64 * 7.0 + 16.0).clamp(60.0, 260.0),
                    rows.len() as f64 * ROW_HEIGHT + 70.0,
                )
            }
        };
        let width = 640.0;
        let (top, bottom) = (30.0, height - 45.0);
        let y_scale = match &y {
            YAxis::Numbers { lo, hi, .. } => Scale {
                lo: *lo,
                hi: *hi,
                from: bottom,
                to: top,
            },
            YAxis::Rows(rows) => Scale {
                lo: 0.0,
                hi: rows.len().max(1) as f64,
                from: top,
                to: bottom,
            },
        };
        Chart {
            id: id.into(),
            title: title.into(),
            desc: desc.into(),
            width,
            height,
            x: Scale {
                lo: x.1,
                hi: x.2,
                from: left,
                to: width - 20.0,
            },
            x_label: x.0.into(),
            y: y_scale,
            y_axis: y,
            left,
            marks: String::new(),
            legend: Vec::new(),
        }
    }

    fn series(&mut self, name: &str, colour: &'static str, dashed: bool) {
        if !self.legend.iter().any(|(n, _, _)| n == name) {
            self.legend.push((name.into(), colour, dashed));
        }
    }

    /// The pixel row of a labelled row's centre.
    fn row(&self, k: usize) -> f64 {
        self.y.at(k as f64 + 0.5)
    }

    /// A line through `points`, each point also a `data-x`/`data-y` vertex.
    pub fn line(&mut self, name: &str, colour: &'static str, dashed: bool, points: &[(f64, f64)]) {
        self.series(name, colour, dashed);
        let d: Vec<String> = points
            .iter()
            .map(|(x, y)| format!("{:.1},{:.1}", self.x.at(*x), self.y.at(*y)))
            .collect();
        let dash = if dashed {
            r#" stroke-dasharray="6 4""#
        } else {
            ""
        };
        let _ = writeln!(
            self.marks,
            r#"<polyline class="series" data-series="{}" fill="none" stroke="{colour}" stroke-width="2"{dash} points="{}"/>"#,
            esc(name),
            d.join(" ")
        );
        for (x, y) in points {
            let _ = writeln!(
                self.marks,
                r#"<circle class="point" data-series="{}" data-x="{}" data-y="{}" cx="{:.1}" cy="{:.1}" r="1" fill="{colour}" fill-opacity="0"/>"#,
                esc(name),
                attr(*x),
                attr(*y),
                self.x.at(*x),
                self.y.at(*y)
            );
        }
    }

    /// Points with an optional vertical interval (`low`, `high`).
    pub fn points(
        &mut self,
        name: &str,
        colour: &'static str,
        points: &[(f64, f64, Option<(f64, f64)>)],
    ) {
        self.series(name, colour, false);
        for (x, y, ci) in points {
            let (px, py) = (self.x.at(*x), self.y.at(*y));
            let mut extra = String::new();
            if let Some((lo, hi)) = ci {
                let _ = write!(
                    extra,
                    r#" data-low="{}" data-high="{}""#,
                    attr(*lo),
                    attr(*hi)
                );
                let _ = writeln!(
                    self.marks,
                    r#"<line x1="{px:.1}" x2="{px:.1}" y1="{:.1}" y2="{:.1}" stroke="{colour}"/>"#,
                    self.y.at(*lo),
                    self.y.at(*hi)
                );
            }
            let _ = writeln!(
                self.marks,
                r#"<circle class="point" data-series="{}" data-x="{}" data-y="{}"{extra} cx="{px:.1}" cy="{py:.1}" r="4" fill="{colour}"/>"#,
                esc(name),
                attr(*x),
                attr(*y)
            );
        }
    }

    /// On a chart of rows: an estimate with its interval in row `k` (a forest plot);
    /// `flag` draws it hollow and marks it `data-flag`.
    pub fn estimate(
        &mut self,
        name: &str,
        colour: &'static str,
        k: usize,
        est: f64,
        ci: (f64, f64),
        flag: bool,
    ) {
        self.series(name, colour, false);
        let y = self.row(k);
        let _ = writeln!(
            self.marks,
            r#"<line x1="{:.1}" x2="{:.1}" y1="{y:.1}" y2="{y:.1}" stroke="{colour}" stroke-width="2"/>"#,
            self.x.at(ci.0),
            self.x.at(ci.1)
        );
        let fill = if flag { "white" } else { colour };
        let _ = writeln!(
            self.marks,
            r#"<rect class="estimate" data-series="{}" data-row="{}" data-estimate="{}" data-low="{}" data-high="{}" data-flag="{flag}" x="{:.1}" y="{:.1}" width="8" height="8" fill="{fill}" stroke="{colour}" stroke-width="2"/>"#,
            esc(name),
            esc(self.row_label(k)),
            attr(est),
            attr(ci.0),
            attr(ci.1),
            self.x.at(est) - 4.0,
            y - 4.0
        );
    }

    /// On a chart of rows: a bar from `from` to `to` in row `k`, its band `slot` of
    /// `slots` (grouped bars).
    pub fn bar(
        &mut self,
        name: &str,
        colour: &'static str,
        k: usize,
        (from, to): (f64, f64),
        (slot, slots): (usize, usize),
        value: f64,
    ) {
        self.series(name, colour, false);
        let band = ROW_HEIGHT * 0.8 / slots as f64;
        let y = self.y.at(k as f64) + ROW_HEIGHT * 0.1 + band * slot as f64;
        let (x0, x1) = (self.x.at(from.min(to)), self.x.at(from.max(to)));
        let _ = writeln!(
            self.marks,
            r#"<rect class="bar" data-series="{}" data-row="{}" data-value="{}" x="{x0:.1}" y="{y:.1}" width="{:.1}" height="{band:.1}" fill="{colour}"/>"#,
            esc(name),
            esc(self.row_label(k)),
            attr(value),
            (x1 - x0).max(0.5)
        );
    }

    /// A vertical reference line at `x` (no effect, the overall AUC, ...).
    pub fn reference_x(&mut self, x: f64, label: &str) {
        let px = self.x.at(x);
        let _ = writeln!(
            self.marks,
            r##"<line class="reference" x1="{px:.1}" x2="{px:.1}" y1="{:.1}" y2="{:.1}" stroke="#999" stroke-dasharray="3 3"><title>{}</title></line>"##,
            self.y.to,
            self.y.from,
            esc(label)
        );
    }

    fn row_label(&self, k: usize) -> &str {
        match &self.y_axis {
            YAxis::Rows(rows) => rows.get(k).map(String::as_str).unwrap_or(""),
            YAxis::Numbers { .. } => "",
        }
    }

    fn axes(&self) -> String {
        let mut s = String::new();
        let (x0, x1) = (self.x.from, self.x.to);
        let (y_bottom, y_top) = match self.y_axis {
            YAxis::Numbers { .. } => (self.y.from, self.y.to),
            YAxis::Rows(_) => (self.y.to, self.y.from),
        };
        let _ = writeln!(
            s,
            r##"<g class="axes" stroke="#444" fill="#222" font-size="11"><line x1="{x0}" x2="{x1}" y1="{y_bottom:.1}" y2="{y_bottom:.1}"/><line x1="{x0}" x2="{x0}" y1="{y_top:.1}" y2="{y_bottom:.1}"/>"##
        );
        for t in ticks(self.x.lo, self.x.hi) {
            let px = self.x.at(t);
            let _ = writeln!(
                s,
                r#"<line x1="{px:.1}" x2="{px:.1}" y1="{y_bottom:.1}" y2="{:.1}"/><text stroke="none" x="{px:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
                y_bottom + 4.0,
                y_bottom + 16.0,
                tick_label(t)
            );
        }
        let _ = writeln!(
            s,
            r#"<text stroke="none" x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            (x0 + x1) / 2.0,
            y_bottom + 32.0,
            esc(&self.x_label)
        );
        match &self.y_axis {
            YAxis::Numbers { label, lo, hi } => {
                for t in ticks(*lo, *hi) {
                    let py = self.y.at(t);
                    let _ = writeln!(
                        s,
                        r#"<line x1="{:.1}" x2="{x0}" y1="{py:.1}" y2="{py:.1}"/><text stroke="none" x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
                        x0 - 4.0,
                        x0 - 6.0,
                        py + 4.0,
                        tick_label(t)
                    );
                }
                let _ = writeln!(
                    s,
                    r#"<text stroke="none" transform="translate(14 {:.1}) rotate(-90)" text-anchor="middle">{}</text>"#,
                    (self.y.from + self.y.to) / 2.0,
                    esc(label)
                );
            }
            YAxis::Rows(rows) => {
                for (k, r) in rows.iter().enumerate() {
                    let _ = writeln!(
                        s,
                        r#"<text stroke="none" x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
                        x0 - 6.0,
                        self.row(k) + 4.0,
                        esc(r)
                    );
                }
            }
        }
        s.push_str("</g>\n");
        s
    }

    /// The chart as a `<figure>`: the SVG (`role="img"`, titled and described) and a
    /// legend in HTML.
    pub fn finish(self) -> String {
        let legend: Vec<String> = self
            .legend
            .iter()
            .map(|(n, c, dashed)| {
                let style = if *dashed { "border-top:2px dashed" } else { "border-top:3px solid" };
                format!(
                    r#"<span class="key"><span class="swatch" style="{style} {c}"></span>{}</span>"#,
                    esc(n)
                )
            })
            .collect();
        format!(
            r#"<figure class="chart" id="{id}">
<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-labelledby="{id}-title {id}-desc" viewBox="0 0 {w} {h}" width="{w}" height="{h}">
<title id="{id}-title">{title}</title>
<desc id="{id}-desc">{desc}</desc>
{axes}{marks}</svg>
<figcaption><b>{title}</b> {legend}</figcaption>
</figure>
"#,
            id = esc(&self.id),
            w = self.width,
            h = self.height,
            title = esc(&self.title),
            desc = esc(&self.desc),
            axes = self.axes(),
            marks = self.marks,
            legend = legend.join(" "),
        )
    }

    /// The left margin, for callers that align a table with the chart.
    pub fn left(&self) -> f64 {
        self.left
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        assert_eq!(ticks(0.0, 1.0), vec![0.0, 0.2, 0.4, 0.6, 0.8, 1.0]);
        assert_eq!(ticks(0.0, 50.0), vec![0.0, 10.0, 20.0, 30.0, 40.0, 50.0]);
        assert_eq!(tick_label(0.30000000000000004), "0.3");
    }

    /// Every mark says what it is, and titles, descriptions and labels are escaped.
    #[test]
    fn marks_carry_their_data_and_text_is_escaped() {
        let mut c = Chart::new(
            "roc",
            "ROC <curve>",
            "a & b",
            ("1 - specificity", 0.0, 1.0),
            YAxis::Numbers {
                label: "sensitivity".into(),
                lo: 0.0,
                hi: 1.0,
            },
        );
        c.line(
            "model",
            PALETTE[0],
            false,
            &[(0.0, 0.0), (0.25, 0.5), (1.0, 1.0)],
        );
        let svg = c.finish();
        assert!(
            svg.contains(r#"data-series="model" data-x="0.25" data-y="0.5""#),
            "{svg}"
        );
        assert!(svg.contains("<title id=\"roc-title\">ROC &lt;curve&gt;</title>"));
        assert!(svg.contains("a &amp; b"));
        assert!(svg.contains(r#"role="img" aria-labelledby="roc-title roc-desc""#));
    }
}
