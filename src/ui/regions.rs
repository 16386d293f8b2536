//! Countries offered for reading national numbers (any two-letter code also works in files).

pub const REGIONS: &[(&str, &str)] = &[
    ("AT", "Austria"),
    ("AU", "Australia"),
    ("BE", "Belgium"),
    ("BR", "Brazil"),
    ("CA", "Canada"),
    ("CH", "Switzerland"),
    ("CZ", "Czechia"),
    ("DE", "Germany"),
    ("DK", "Denmark"),
    ("ES", "Spain"),
    ("FI", "Finland"),
    ("FR", "France"),
    ("GB", "United Kingdom"),
    ("GR", "Greece"),
    ("IE", "Ireland"),
    ("IN", "India"),
    ("IT", "Italy"),
    ("JP", "Japan"),
    ("LU", "Luxembourg"),
    ("MX", "Mexico"),
    ("NL", "Netherlands"),
    ("NO", "Norway"),
    ("NZ", "New Zealand"),
    ("PL", "Poland"),
    ("PT", "Portugal"),
    ("SE", "Sweden"),
    ("TR", "Türkiye"),
    ("US", "United States"),
    ("ZA", "South Africa"),
];

pub fn name(code: &str) -> &str {
    REGIONS.iter().find(|(c, _)| *c == code).map(|(_, n)| *n).unwrap_or(code)
}

/// A country picker labelled `label`.
pub fn picker(ui: &mut egui::Ui, id: &str, label: &str, region: &mut String) {
    ui.horizontal(|ui| {
        let l = ui.label(label);
        let shown = format!("{} ({})", name(region), region);
        egui::ComboBox::from_id_salt(id)
            .selected_text(shown)
            .show_ui(ui, |ui| {
                for (code, n) in REGIONS {
                    ui.selectable_value(region, code.to_string(), format!("{n} ({code})"));
                }
            })
            .response
            .labelled_by(l.id);
    });
}
