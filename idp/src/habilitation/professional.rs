//! A professional's practice data (what the RPPS directory says about them): the professions they
//! exercise and the sites where they work. It is what Habilis holds beyond the account, enough to
//! produce the claims of Pro Santé Connect (scope `scope_all`) so that apps written for PSC find
//! the same `SubjectRefPro`, `SubjectRole`, `SubjectOrganization`… here.
//!
//! The serde names are PSC's, so a [`PracticeRecord`] serialises to exactly a PSC `SubjectRefPro`
//! (and one received from PSC deserialises into it; fields not modelled are dropped). Practice
//! data is imported from a CSV file ([`parse_professionals_csv`], documented in the README).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::ids::{IdNat, IdNatKind};

/// OID of the profession nomenclature (TRE_G15) that qualifies the codes of `SubjectRole`.
pub const OID_PROFESSION: &str = "1.2.250.1.213.1.1.5.5";
/// OID that qualifies the `Palier_Authentification` values.
pub const OID_PALIER_AUTHENTIFICATION: &str = "1.2.250.1.213.1.5.1.1.1";

/// One practice activity (a site where the professional works); the serde names are PSC's.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Activity {
    /// Mode of practice, e.g. `L` (liberal), `S` (salaried).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_mode_exercice: Option<String>,
    /// Activity sector, e.g. `SA07` (practice), `SA01` (hospital).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_secteur_dactivite: Option<String>,
    /// Technical identifier of the structure, e.g. `R102671`, `F0B0193488`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identifiant_technique_de_la_structure: Option<String>,
    /// Name of the site.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raison_sociale_site: Option<String>,
    /// FINESS number of the site (geographic establishment).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub numero_finess_site: Option<String>,
    /// FINESS number of the legal entity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub numero_finessetablissement_juridique: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_postal: Option<String>,
}

/// One profession exercised (a PSC "exercice"); the serde names are PSC's.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Exercice {
    /// Profession code (TRE_G15), e.g. `10` médecin, `21` pharmacien.
    pub code_profession: String,
    /// Professional category, e.g. `C` (civilian).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_categorie_professionnelle: Option<String>,
    /// Civility of practice, e.g. `DR`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_civilite_dexercice: Option<String>,
    /// Family name of practice.
    pub nom_dexercice: String,
    /// Given name of practice.
    pub prenom_dexercice: String,
    /// Kind of skill, e.g. `S` (specialty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_type_savoir_faire: Option<String>,
    /// Skill, e.g. `SM26` (general medicine).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_savoir_faire: Option<String>,
    #[serde(default)]
    pub activities: Vec<Activity>,
}

/// What Habilis holds on a professional beyond the account. Its JSON form is a PSC
/// `SubjectRefPro`: `{"codeCivilite": "M", "exercices": [...]}`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct PracticeRecord {
    /// Civility code, e.g. `M`, `MME`.
    #[serde(rename = "codeCivilite", default, skip_serializing_if = "Option::is_none")]
    pub civility: Option<String>,
    #[serde(default)]
    pub exercices: Vec<Exercice>,
}

impl PracticeRecord {
    /// Profession codes (TRE_G15) of all exercices, deduplicated, in order.
    pub fn professions(&self) -> Vec<String> {
        let mut codes: Vec<String> = Vec::new();
        for exercice in &self.exercices {
            if !codes.contains(&exercice.code_profession) {
                codes.push(exercice.code_profession.clone());
            }
        }
        codes
    }

    /// The main structure (technical id, name): that of the first activity, in exercice order,
    /// which has both; `None` when no activity names its structure.
    pub fn main_organisation(&self) -> Option<(&str, &str)> {
        self.exercices.iter().flat_map(|exercice| &exercice.activities).find_map(|activity| {
            Some((activity.identifiant_technique_de_la_structure.as_deref()?, activity.raison_sociale_site.as_deref()?))
        })
    }
}

/// The register behind an idNat, as PSC names it in `otherIds[].origine`: `RPPS` for `8` + RPPS,
/// `ADELI` for `0` + ADELI; `None` for anything else (staff-card identifiers, malformed values).
pub fn id_nat_origin(id_nat: &str) -> Option<&'static str> {
    match IdNat::parse(id_nat).ok()?.kind() {
        IdNatKind::Rpps => Some("RPPS"),
        IdNatKind::Adeli => Some("ADELI"),
        IdNatKind::Staff => None,
    }
}

/// The PSC `Palier_Authentification` for an acr `eidas1`/`eidas2`/`eidas3`:
/// `APPPRIP<n>^1.2.250.1.213.1.5.1.1.1`. Only `APPPRIP3` (card login, `eidas3`) is observed in
/// PSC test material; `APPPRIP1`/`APPPRIP2` follow the same pattern (unconfirmed). `None` for any
/// other acr.
pub fn palier_authentification(acr: &str) -> Option<String> {
    match acr.strip_prefix("eidas")? {
        level @ ("1" | "2" | "3") => Some(format!("APPPRIP{level}^{OID_PALIER_AUTHENTIFICATION}")),
        _ => None,
    }
}

/// The PSC-compatible claims of a professional (scope `scope_all`): `SubjectNameID` and
/// `preferred_username` (the idNat), `given_name`, `family_name`, `SubjectRole`
/// (`<profession>^1.2.250.1.213.1.1.5.5`), `SubjectRefPro`, `SubjectOrganization` and
/// `SubjectOrganizationID` (from [`PracticeRecord::main_organisation`]), `otherIds`, and
/// `Palier_Authentification` (from the acr). A claim with no value is omitted (names, organisation,
/// `otherIds` for an idNat that is neither RPPS nor ADELI, the palier without or with an unknown
/// acr).
pub fn psc_claims(
    id_nat: &str,
    given_name: Option<&str>,
    family_name: Option<&str>,
    practice: &PracticeRecord,
    acr: Option<&str>,
) -> Map<String, Value> {
    let mut claims = Map::new();
    claims.insert("SubjectNameID".into(), json!(id_nat));
    claims.insert("preferred_username".into(), json!(id_nat));
    if let Some(given_name) = given_name {
        claims.insert("given_name".into(), json!(given_name));
    }
    if let Some(family_name) = family_name {
        claims.insert("family_name".into(), json!(family_name));
    }
    let roles: Vec<String> = practice.professions().iter().map(|code| format!("{code}^{OID_PROFESSION}")).collect();
    claims.insert("SubjectRole".into(), json!(roles));
    claims.insert("SubjectRefPro".into(), serde_json::to_value(practice).unwrap_or_else(|_| json!({})));
    if let Some((id, name)) = practice.main_organisation() {
        claims.insert("SubjectOrganization".into(), json!(name));
        claims.insert("SubjectOrganizationID".into(), json!(id));
    }
    if let Some(origin) = id_nat_origin(id_nat) {
        claims.insert("otherIds".into(), json!([{"identifiant": id_nat, "origine": origin, "qualite": 1}]));
    }
    if let Some(palier) = acr.and_then(palier_authentification) {
        claims.insert("Palier_Authentification".into(), json!(palier));
    }
    claims
}

/// One imported professional.
#[derive(Clone, Debug, PartialEq)]
pub struct ImportedProfessional {
    /// The validated idNat (an ADELI-based one in upper case).
    pub id_nat: String,
    pub given_name: String,
    pub family_name: String,
    pub email: Option<String>,
    pub practice: PracticeRecord,
}

/// A problem in an imported file, with its line (1-based, the header is line 1).
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("line {line}: {message}")]
pub struct ImportError {
    pub line: u64,
    pub message: String,
}

/// Columns of the import file, in documentation order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Col {
    IdNat,
    GivenName,
    FamilyName,
    Email,
    Civility,
    ProfessionCode,
    ProfessionalCategory,
    CivilityOfPractice,
    SkillType,
    SkillCode,
    PracticeMode,
    ActivitySector,
    StructureId,
    StructureName,
    FinessSite,
    FinessLegal,
    PostalCode,
}

/// (column, header name, required)
const COLUMNS: [(Col, &str, bool); 17] = [
    (Col::IdNat, "id_nat", true),
    (Col::GivenName, "given_name", true),
    (Col::FamilyName, "family_name", true),
    (Col::Email, "email", false),
    (Col::Civility, "civility", false),
    (Col::ProfessionCode, "profession_code", true),
    (Col::ProfessionalCategory, "professional_category", false),
    (Col::CivilityOfPractice, "civility_of_practice", false),
    (Col::SkillType, "skill_type", false),
    (Col::SkillCode, "skill_code", false),
    (Col::PracticeMode, "practice_mode", false),
    (Col::ActivitySector, "activity_sector", false),
    (Col::StructureId, "structure_id", false),
    (Col::StructureName, "structure_name", false),
    (Col::FinessSite, "finess_site", false),
    (Col::FinessLegal, "finess_legal", false),
    (Col::PostalCode, "postal_code", false),
];

const ACTIVITY_COLUMNS: [Col; 7] = [
    Col::PracticeMode,
    Col::ActivitySector,
    Col::StructureId,
    Col::StructureName,
    Col::FinessSite,
    Col::FinessLegal,
    Col::PostalCode,
];

fn column_name(col: Col) -> &'static str {
    COLUMNS[col as usize].1
}

/// Where each known column sits in the file.
struct Header {
    positions: [Option<usize>; COLUMNS.len()],
    width: usize,
    /// A required column is missing: rows can be checked but not merged.
    missing_required: bool,
}

/// One data row, its values trimmed, by column.
struct Row {
    line: u64,
    values: Vec<String>,
    header_positions: [Option<usize>; COLUMNS.len()],
}

impl Row {
    /// The trimmed value of a column; empty when the column is absent.
    fn get(&self, col: Col) -> &str {
        self.header_positions[col as usize].and_then(|i| self.values.get(i)).map(String::as_str).unwrap_or("")
    }

    fn optional(&self, col: Col) -> Option<String> {
        Some(self.get(col)).filter(|v| !v.is_empty()).map(str::to_string)
    }
}

/// A row that passed the per-row checks.
struct ValidRow {
    line: u64,
    id_nat: String,
    given_name: String,
    family_name: String,
    email: Option<String>,
    civility: Option<String>,
    profession_code: String,
    professional_category: Option<String>,
    civility_of_practice: Option<String>,
    skill_type: Option<String>,
    skill_code: Option<String>,
    activity: Option<Activity>,
}

/// Parses the professionals import file (documented in the README, "Importing professionals").
///
/// The first row is the header; the separator is `;` or `,`, whichever the header line has more
/// of (`,` on a tie); UTF-8 with an optional BOM; fields may be quoted; values are trimmed; blank
/// rows are skipped. Header names are case-insensitive and in any order; unknown or repeated
/// columns are refused. One row per (professional, profession, activity): rows with the same
/// idNat make one professional, rows with the same profession code within a professional one
/// exercice, and a row whose activity columns are all empty adds no activity (otherwise it needs
/// `structure_id` and `structure_name`). `nomDexercice`/`prenomDexercice` are the family/given
/// names. Optional values left empty on some rows of a professional are taken from the others;
/// two different non-empty values are a conflict.
///
/// Every problem found is returned, each with its line (the header is line 1). Once the header
/// names a required column missing, the rows are still checked but not merged.
pub fn parse_professionals_csv(input: &[u8]) -> Result<Vec<ImportedProfessional>, Vec<ImportError>> {
    let input = input.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(input);
    let separator = detect_separator(input);
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(separator)
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(input);
    let mut errors = Vec::new();
    let mut records = reader.byte_records();

    let header = match records.next() {
        None => return Err(vec![error(1, "the file is empty: the first line must be the header row".into())]),
        Some(Err(e)) => return Err(vec![csv_error(&e, 1)]),
        Some(Ok(record)) => parse_header(&record, &mut errors),
    };

    let mut rows = Vec::new();
    for (index, record) in records.enumerate() {
        // Approximate line for errors without a position: header + rows seen (blank lines aside).
        let fallback_line = index as u64 + 2;
        let record = match record {
            Ok(record) => record,
            Err(e) => {
                errors.push(csv_error(&e, fallback_line));
                continue;
            }
        };
        let line = record.position().map_or(fallback_line, csv::Position::line);
        if record.iter().all(<[u8]>::is_empty) {
            continue;
        }
        if record.len() != header.width {
            errors.push(error(
                line,
                format!(
                    "{} fields where the header has {} (separator `{}`): check for a missing or extra separator",
                    record.len(),
                    header.width,
                    separator as char
                ),
            ));
            continue;
        }
        let mut values = Vec::with_capacity(record.len());
        let mut utf8_ok = true;
        for field in record.iter() {
            match std::str::from_utf8(field) {
                Ok(value) => values.push(value.to_string()),
                Err(_) => {
                    utf8_ok = false;
                    break;
                }
            }
        }
        if !utf8_ok {
            errors.push(error(line, "not valid UTF-8: save the file as \"CSV UTF-8\"".into()));
            continue;
        }
        let row = Row { line, values, header_positions: header.positions };
        if let Some(valid) = check_row(&row, &mut errors) {
            rows.push(valid);
        }
    }

    if header.missing_required {
        return Err(errors);
    }
    let professionals = merge_rows(rows, &mut errors);
    if errors.is_empty() { Ok(professionals) } else { Err(errors) }
}

fn error(line: u64, message: String) -> ImportError {
    ImportError { line, message }
}

fn csv_error(e: &csv::Error, fallback_line: u64) -> ImportError {
    let line = e.position().map_or(fallback_line, csv::Position::line);
    error(line, format!("unreadable CSV: {e}"))
}

/// `;` when the header line has more semicolons than commas, `,` otherwise.
fn detect_separator(input: &[u8]) -> u8 {
    let first_line = input.split(|&b| b == b'\n').next().unwrap_or_default();
    let count = |c: u8| first_line.iter().filter(|&&b| b == c).count();
    if count(b';') > count(b',') { b';' } else { b',' }
}

fn parse_header(record: &csv::ByteRecord, errors: &mut Vec<ImportError>) -> Header {
    let mut positions = [None; COLUMNS.len()];
    for (index, raw) in record.iter().enumerate() {
        let Ok(name) = std::str::from_utf8(raw) else {
            errors.push(error(1, "header is not valid UTF-8: save the file as \"CSV UTF-8\"".into()));
            continue;
        };
        let name = name.to_ascii_lowercase();
        match COLUMNS.iter().position(|(_, known, _)| *known == name) {
            Some(col) if positions[col].is_some() => {
                errors.push(error(1, format!("column `{name}` appears twice")));
            }
            Some(col) => positions[col] = Some(index),
            None if name.is_empty() => errors.push(error(
                1,
                format!("column {} has no name in the header: remove the extra separator or name it", index + 1),
            )),
            None => errors.push(error(
                1,
                format!(
                    "unknown column `{name}`; the columns are {}",
                    COLUMNS.iter().map(|(_, n, _)| *n).collect::<Vec<_>>().join(", ")
                ),
            )),
        }
    }
    let mut missing_required = false;
    for (col, name, required) in COLUMNS {
        if required && positions[col as usize].is_none() {
            errors.push(error(1, format!("missing required column `{name}`")));
            missing_required = true;
        }
    }
    Header { positions, width: record.len(), missing_required }
}

/// Checks one row on its own; `None` (with errors recorded) when it is not usable.
fn check_row(row: &Row, errors: &mut Vec<ImportError>) -> Option<ValidRow> {
    let before = errors.len();
    let line = row.line;
    for (col, name, required) in COLUMNS {
        if required && row.header_positions[col as usize].is_some() && row.get(col).is_empty() {
            errors.push(error(line, format!("`{name}` is empty; it is required")));
        }
    }

    let mut id_nat = String::new();
    if !row.get(Col::IdNat).is_empty() {
        match IdNat::parse(row.get(Col::IdNat)) {
            Ok(parsed) => id_nat = parsed.as_str().to_string(),
            Err(e) => errors.push(error(line, format!("id_nat `{}`: {e}", row.get(Col::IdNat)))),
        }
    }

    let profession_code = row.get(Col::ProfessionCode);
    let two_digits = profession_code.len() == 2 && profession_code.bytes().all(|b| b.is_ascii_digit());
    if !profession_code.is_empty() && !two_digits {
        errors.push(error(
            line,
            format!("profession_code `{profession_code}` must be 2 digits (TRE_G15), e.g. 10 médecin, 21 pharmacien"),
        ));
    }

    let email = row.optional(Col::Email);
    if let Some(email) = &email
        && !email_shape_ok(email)
    {
        errors.push(error(line, format!("email `{email}` is not an email address (name@domain.example)")));
    }

    let activity = if ACTIVITY_COLUMNS.iter().all(|&col| row.get(col).is_empty()) {
        None
    } else {
        for col in [Col::StructureId, Col::StructureName] {
            if row.get(col).is_empty() {
                errors.push(error(
                    line,
                    format!(
                        "`{}` is empty: an activity needs structure_id and structure_name (leave every activity column empty for a row without activity)",
                        column_name(col)
                    ),
                ));
            }
        }
        Some(Activity {
            code_mode_exercice: row.optional(Col::PracticeMode),
            code_secteur_dactivite: row.optional(Col::ActivitySector),
            identifiant_technique_de_la_structure: row.optional(Col::StructureId),
            raison_sociale_site: row.optional(Col::StructureName),
            numero_finess_site: row.optional(Col::FinessSite),
            numero_finessetablissement_juridique: row.optional(Col::FinessLegal),
            code_postal: row.optional(Col::PostalCode),
        })
    };

    if errors.len() > before {
        return None;
    }
    Some(ValidRow {
        line,
        id_nat,
        given_name: row.get(Col::GivenName).to_string(),
        family_name: row.get(Col::FamilyName).to_string(),
        email,
        civility: row.optional(Col::Civility),
        profession_code: profession_code.to_string(),
        professional_category: row.optional(Col::ProfessionalCategory),
        civility_of_practice: row.optional(Col::CivilityOfPractice),
        skill_type: row.optional(Col::SkillType),
        skill_code: row.optional(Col::SkillCode),
        activity,
    })
}

/// One `@` with a local part before it and a dotted domain after it, no spaces (the same rule as
/// `habilis user add`).
fn email_shape_ok(email: &str) -> bool {
    match email.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.is_empty()
                && !domain.contains('@')
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !email.contains(char::is_whitespace)
        }
        None => false,
    }
}

/// A value merged from several rows, with the line that first gave it.
#[derive(Default)]
struct Tracked {
    value: Option<String>,
    line: u64,
}

impl Tracked {
    /// Takes `new` if nothing was given yet; a different non-empty value is a conflict.
    fn merge(&mut self, new: Option<&str>, line: u64, what: &str, errors: &mut Vec<ImportError>) {
        let Some(new) = new else { return };
        match &self.value {
            None => {
                self.value = Some(new.to_string());
                self.line = line;
            }
            Some(old) if old == new || (what == "email" && old.eq_ignore_ascii_case(new)) => {}
            Some(old) => errors.push(error(
                line,
                format!("{what} `{new}` conflicts with `{old}` on line {} for the same professional", self.line),
            )),
        }
    }
}

struct ExerciceBuilder {
    code: String,
    category: Tracked,
    civility_of_practice: Tracked,
    skill_type: Tracked,
    skill_code: Tracked,
    activities: Vec<Activity>,
}

struct ProfessionalBuilder {
    id_nat: String,
    given_name: Tracked,
    family_name: Tracked,
    email: Tracked,
    civility: Tracked,
    exercices: Vec<ExerciceBuilder>,
}

fn merge_rows(rows: Vec<ValidRow>, errors: &mut Vec<ImportError>) -> Vec<ImportedProfessional> {
    let mut builders: Vec<ProfessionalBuilder> = Vec::new();
    let mut by_id_nat: HashMap<String, usize> = HashMap::new();
    for row in rows {
        let index = *by_id_nat.entry(row.id_nat.clone()).or_insert_with(|| {
            builders.push(ProfessionalBuilder {
                id_nat: row.id_nat.clone(),
                given_name: Tracked::default(),
                family_name: Tracked::default(),
                email: Tracked::default(),
                civility: Tracked::default(),
                exercices: Vec::new(),
            });
            builders.len() - 1
        });
        let professional = &mut builders[index];
        let line = row.line;
        professional.given_name.merge(Some(&row.given_name), line, "given_name", errors);
        professional.family_name.merge(Some(&row.family_name), line, "family_name", errors);
        professional.email.merge(row.email.as_deref(), line, "email", errors);
        professional.civility.merge(row.civility.as_deref(), line, "civility", errors);

        let exercice = match professional.exercices.iter().position(|e| e.code == row.profession_code) {
            Some(i) => &mut professional.exercices[i],
            None => {
                professional.exercices.push(ExerciceBuilder {
                    code: row.profession_code.clone(),
                    category: Tracked::default(),
                    civility_of_practice: Tracked::default(),
                    skill_type: Tracked::default(),
                    skill_code: Tracked::default(),
                    activities: Vec::new(),
                });
                professional.exercices.last_mut().expect("just pushed")
            }
        };
        exercice.category.merge(row.professional_category.as_deref(), line, "professional_category", errors);
        exercice.civility_of_practice.merge(row.civility_of_practice.as_deref(), line, "civility_of_practice", errors);
        exercice.skill_type.merge(row.skill_type.as_deref(), line, "skill_type", errors);
        exercice.skill_code.merge(row.skill_code.as_deref(), line, "skill_code", errors);
        if let Some(activity) = row.activity
            && !exercice.activities.contains(&activity)
        {
            exercice.activities.push(activity);
        }
    }

    builders
        .into_iter()
        .map(|b| {
            let given_name = b.given_name.value.unwrap_or_default();
            let family_name = b.family_name.value.unwrap_or_default();
            let exercices = b
                .exercices
                .into_iter()
                .map(|e| Exercice {
                    code_profession: e.code,
                    code_categorie_professionnelle: e.category.value,
                    code_civilite_dexercice: e.civility_of_practice.value,
                    nom_dexercice: family_name.clone(),
                    prenom_dexercice: given_name.clone(),
                    code_type_savoir_faire: e.skill_type.value,
                    code_savoir_faire: e.skill_code.value,
                    activities: e.activities,
                })
                .collect();
            ImportedProfessional {
                id_nat: b.id_nat,
                given_name,
                family_name,
                email: b.email.value,
                practice: PracticeRecord { civility: b.civility.value, exercices },
            }
        })
        .collect()
}

/// The Pro Santé Connect–compatible claims of an account (scope `scope_all`): empty for accounts
/// that are not professionals with an idNat. Practice data comes from the store (imported with
/// `habilis import professionals` or the admin API); without it only the identity claims appear.
pub async fn psc_claims_of(
    store: &crate::store::SharedStore,
    account: &crate::store::Account,
    acr: Option<&str>,
) -> Result<Map<String, Value>, crate::store::StoreError> {
    let Some(id_nat) = account.id_nat.as_deref().filter(|_| account.kind == crate::store::AccountKind::Professional)
    else {
        return Ok(Map::new());
    };
    let practice = match store.habilitations().practice_of(&account.id).await? {
        Some(json) => serde_json::from_str::<PracticeRecord>(&json)
            .map_err(|e| crate::store::StoreError::Corrupt(format!("practice of {}: {e}", account.id)))?,
        None => PracticeRecord::default(),
    };
    Ok(psc_claims(id_nat, account.given_name.as_deref(), account.family_name.as_deref(), &practice, acr))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: &str = include_str!("../../../tests/fixtures/psc-userinfo.json");

    /// The fixture's professional, as Habilis would hold it.
    fn fixture_record() -> PracticeRecord {
        let s = |v: &str| Some(v.to_string());
        PracticeRecord {
            civility: s("M"),
            exercices: vec![Exercice {
                code_profession: "10".into(),
                code_categorie_professionnelle: s("C"),
                code_civilite_dexercice: s("DR"),
                nom_dexercice: "DOC0042788".into(),
                prenom_dexercice: "KIT".into(),
                code_type_savoir_faire: s("S"),
                code_savoir_faire: s("SM26"),
                activities: vec![
                    Activity {
                        code_mode_exercice: s("L"),
                        code_secteur_dactivite: s("SA07"),
                        identifiant_technique_de_la_structure: s("R102671"),
                        raison_sociale_site: s("CABINET M DOC0042788"),
                        code_postal: s("75009"),
                        ..Activity::default()
                    },
                    Activity {
                        code_mode_exercice: s("S"),
                        code_secteur_dactivite: s("SA01"),
                        numero_finess_site: s("0B0193488"),
                        numero_finessetablissement_juridique: s("1B0064166"),
                        identifiant_technique_de_la_structure: s("F0B0193488"),
                        raison_sociale_site: s("HOPITAL GENERIQUE FIN VARI"),
                        code_postal: None,
                    },
                ],
            }],
        }
    }

    /// `expected` with the keys Habilis does not model removed from every activity.
    fn without_unmodelled_keys(mut ref_pro: Value) -> Value {
        for exercice in ref_pro["exercices"].as_array_mut().unwrap() {
            for activity in exercice["activities"].as_array_mut().unwrap() {
                let activity = activity.as_object_mut().unwrap();
                activity.remove("ancienIdentifiantDeLaStructure");
                activity.remove("autoriteDenregistrement");
            }
        }
        ref_pro
    }

    #[test]
    fn psc_claims_reproduce_the_fixture() {
        let fixture: Value = serde_json::from_str(FIXTURE).unwrap();
        let claims = psc_claims("899700427885", Some("KIT"), Some("DOC0042788"), &fixture_record(), Some("eidas3"));
        for name in [
            "SubjectNameID",
            "preferred_username",
            "given_name",
            "family_name",
            "SubjectRole",
            "SubjectOrganization",
            "SubjectOrganizationID",
            "otherIds",
            "Palier_Authentification",
        ] {
            assert_eq!(claims.get(name), Some(&fixture[name]), "{name}");
        }
        assert_eq!(claims["SubjectRefPro"], without_unmodelled_keys(fixture["SubjectRefPro"].clone()));
        assert_eq!(claims.len(), 10, "{claims:?}");
    }

    #[test]
    fn a_psc_subject_ref_pro_deserialises_into_a_practice_record() {
        let fixture: Value = serde_json::from_str(FIXTURE).unwrap();
        let record: PracticeRecord = serde_json::from_value(fixture["SubjectRefPro"].clone()).unwrap();
        assert_eq!(record, fixture_record());
        let stored = serde_json::to_string(&record).unwrap();
        assert_eq!(serde_json::from_str::<PracticeRecord>(&stored).unwrap(), record);
        assert_eq!(serde_json::from_str::<PracticeRecord>("{}").unwrap(), PracticeRecord::default());
    }

    #[test]
    fn professions_and_main_organisation() {
        let mut record = fixture_record();
        assert_eq!(record.professions(), ["10"]);
        assert_eq!(record.main_organisation(), Some(("R102671", "CABINET M DOC0042788")));

        // Deduplicated, in order; the organisation is the first activity that names its structure.
        let mut second = record.exercices[0].clone();
        second.code_profession = "21".into();
        record.exercices.push(second);
        record.exercices.push(record.exercices[0].clone());
        assert_eq!(record.professions(), ["10", "21"]);
        record.exercices[0].activities[0].raison_sociale_site = None;
        assert_eq!(record.main_organisation(), Some(("F0B0193488", "HOPITAL GENERIQUE FIN VARI")));

        assert_eq!(PracticeRecord::default().main_organisation(), None);
        assert!(PracticeRecord::default().professions().is_empty());
    }

    #[test]
    fn claims_without_organisation_names_or_acr() {
        let record = PracticeRecord {
            civility: None,
            exercices: vec![Exercice {
                code_profession: "60".into(),
                nom_dexercice: "X".into(),
                prenom_dexercice: "Y".into(),
                ..Exercice::default()
            }],
        };
        let claims = psc_claims("00B7010446", None, None, &record, None);
        assert_eq!(claims["SubjectRole"], json!(["60^1.2.250.1.213.1.1.5.5"]));
        assert_eq!(
            claims["SubjectRefPro"],
            json!({"exercices": [{"codeProfession": "60", "nomDexercice": "X", "prenomDexercice": "Y", "activities": []}]})
        );
        assert_eq!(claims["otherIds"], json!([{"identifiant": "00B7010446", "origine": "ADELI", "qualite": 1}]));
        for absent in
            ["given_name", "family_name", "SubjectOrganization", "SubjectOrganizationID", "Palier_Authentification"]
        {
            assert!(!claims.contains_key(absent), "{absent}");
        }
        // A staff-card identifier has no RPPS/ADELI origin.
        assert!(!psc_claims("500000000029751", None, None, &record, None).contains_key("otherIds"));
    }

    #[test]
    fn palier_and_origin() {
        assert_eq!(palier_authentification("eidas3").as_deref(), Some("APPPRIP3^1.2.250.1.213.1.5.1.1.1"));
        assert_eq!(palier_authentification("eidas2").as_deref(), Some("APPPRIP2^1.2.250.1.213.1.5.1.1.1"));
        assert_eq!(palier_authentification("eidas1").as_deref(), Some("APPPRIP1^1.2.250.1.213.1.5.1.1.1"));
        for other in ["eidas4", "eidas", "eidas33", "urn:x", ""] {
            assert_eq!(palier_authentification(other), None, "{other}");
        }
        assert_eq!(id_nat_origin("899700427885"), Some("RPPS"));
        assert_eq!(id_nat_origin("00B7010446"), Some("ADELI"));
        assert_eq!(id_nat_origin("899700427886"), None); // bad Luhn digit
        assert_eq!(id_nat_origin("500000000029751"), None);
        assert_eq!(id_nat_origin("399700427885"), None);
    }

    const GOOD: &str = "\
id_nat;given_name;family_name;email;civility;profession_code;professional_category;civility_of_practice;skill_type;skill_code;practice_mode;activity_sector;structure_id;structure_name;finess_site;finess_legal;postal_code
899700427885;KIT;DOC0042788;kit.doc@example.fr;M;10;C;DR;S;SM26;L;SA07;R102671;CABINET M DOC0042788;;;75009
899700427885;KIT;DOC0042788;;M;10;C;DR;S;SM26;S;SA01;F0B0193488;HOPITAL GENERIQUE FIN VARI;0B0193488;1B0064166;
899700218896;ANNE;PHARMA;anne@example.fr;MME;21;C;;;;L;SA33;R200001;PHARMACIE DU PORT;;;13002
899700218896;ANNE;PHARMA;;;10;;DR;;;;;;;;;
";

    fn expected_good() -> Vec<ImportedProfessional> {
        let kit = fixture_record();
        let s = |v: &str| Some(v.to_string());
        vec![
            ImportedProfessional {
                id_nat: "899700427885".into(),
                given_name: "KIT".into(),
                family_name: "DOC0042788".into(),
                email: s("kit.doc@example.fr"),
                practice: kit,
            },
            ImportedProfessional {
                id_nat: "899700218896".into(),
                given_name: "ANNE".into(),
                family_name: "PHARMA".into(),
                email: s("anne@example.fr"),
                practice: PracticeRecord {
                    civility: s("MME"),
                    exercices: vec![
                        Exercice {
                            code_profession: "21".into(),
                            code_categorie_professionnelle: s("C"),
                            nom_dexercice: "PHARMA".into(),
                            prenom_dexercice: "ANNE".into(),
                            activities: vec![Activity {
                                code_mode_exercice: s("L"),
                                code_secteur_dactivite: s("SA33"),
                                identifiant_technique_de_la_structure: s("R200001"),
                                raison_sociale_site: s("PHARMACIE DU PORT"),
                                code_postal: s("13002"),
                                ..Activity::default()
                            }],
                            ..Exercice::default()
                        },
                        Exercice {
                            code_profession: "10".into(),
                            code_civilite_dexercice: s("DR"),
                            nom_dexercice: "PHARMA".into(),
                            prenom_dexercice: "ANNE".into(),
                            ..Exercice::default()
                        },
                    ],
                },
            },
        ]
    }

    #[test]
    fn good_file_with_semicolons() {
        let imported = parse_professionals_csv(GOOD.as_bytes()).unwrap();
        assert_eq!(imported, expected_good());
        assert_eq!(imported[1].practice.professions(), ["21", "10"]);
        // The imported practice gives the fixture's claims.
        let claims = psc_claims("899700427885", Some("KIT"), Some("DOC0042788"), &imported[0].practice, Some("eidas3"));
        assert_eq!(claims["SubjectOrganizationID"], "R102671");
    }

    #[test]
    fn good_file_with_commas_bom_crlf_quotes_and_any_column_order() {
        let csv = "\u{feff}Family_Name,ID_NAT , given_name,profession_code,structure_id,structure_name,email\r\n\
                   \"DOC0042788\",899700427885,KIT,10,R1,\"CABINET, RUE \"\"X\"\"\",\r\n\
                   \r\n\
                   ,,,,,,\r\n\
                   DOC0042788,899700427885,KIT,10,R2,CLINIQUE,Kit@Example.fr\r\n";
        let imported = parse_professionals_csv(csv.as_bytes()).unwrap();
        assert_eq!(imported.len(), 1);
        let kit = &imported[0];
        assert_eq!(
            (kit.id_nat.as_str(), kit.given_name.as_str(), kit.family_name.as_str()),
            ("899700427885", "KIT", "DOC0042788")
        );
        assert_eq!(kit.email.as_deref(), Some("Kit@Example.fr"));
        let activities = &kit.practice.exercices[0].activities;
        assert_eq!(activities.len(), 2);
        assert_eq!(activities[0].raison_sociale_site.as_deref(), Some("CABINET, RUE \"X\""));
        assert_eq!(kit.practice.main_organisation(), Some(("R1", "CABINET, RUE \"X\"")));

        // The same content separated by `;` gives the same result, and a BOM changes nothing.
        let semicolons = GOOD.as_bytes();
        let with_bom = [b"\xEF\xBB\xBF".as_slice(), semicolons].concat();
        assert_eq!(parse_professionals_csv(&with_bom).unwrap(), expected_good());
        let commas = GOOD.replace(';', ",");
        assert_eq!(parse_professionals_csv(commas.as_bytes()).unwrap(), expected_good());
    }

    #[test]
    fn identical_rows_add_one_activity_and_adeli_is_upper_cased() {
        let csv = "id_nat;given_name;family_name;profession_code;structure_id;structure_name\n\
                   00b7010446;Léa;Infirmière;60;R9;CENTRE\n\
                   00B7010446;Léa;Infirmière;60;R9;CENTRE\n";
        let imported = parse_professionals_csv(csv.as_bytes()).unwrap();
        assert_eq!(imported.len(), 1);
        assert_eq!(imported[0].id_nat, "00B7010446");
        assert_eq!(imported[0].family_name, "Infirmière");
        assert_eq!(imported[0].practice.exercices[0].activities.len(), 1);
        assert_eq!(parse_professionals_csv(b"id_nat,given_name,family_name,profession_code\n").unwrap(), vec![]);
    }

    fn errors_of(csv: &str) -> Vec<(u64, String)> {
        parse_professionals_csv(csv.as_bytes()).unwrap_err().into_iter().map(|e| (e.line, e.message)).collect()
    }

    fn assert_error(errors: &[(u64, String)], line: u64, fragment: &str) {
        assert!(
            errors.iter().any(|(l, m)| *l == line && m.contains(fragment)),
            "no error on line {line} containing {fragment:?} in {errors:#?}"
        );
    }

    #[test]
    fn header_errors_are_on_line_1_and_name_the_column() {
        let errors = errors_of("id_nat;Given_Name;emial;email;email\n899700427885;KIT;x;a@b.fr;a@b.fr\n");
        assert_error(&errors, 1, "missing required column `family_name`");
        assert_error(&errors, 1, "missing required column `profession_code`");
        assert_error(&errors, 1, "unknown column `emial`");
        assert_error(&errors, 1, "column `email` appears twice");
        assert_eq!(errors.len(), 4, "{errors:#?}");

        // Row problems are still reported alongside a header problem.
        let errors = errors_of("id_nat;given_name;family_name\n899700427886;KIT;DOC\n");
        assert_error(&errors, 1, "missing required column `profession_code`");
        assert_error(&errors, 2, "Luhn");

        assert_eq!(
            errors_of("id_nat,given_name,family_name,profession_code,\n"),
            [(1, "column 5 has no name in the header: remove the extra separator or name it".to_string())]
        );
        assert_eq!(errors_of(""), [(1, "the file is empty: the first line must be the header row".to_string())]);
        assert_error(&errors_of("\u{feff}"), 1, "the file is empty");
    }

    #[test]
    fn every_row_error_is_collected_with_its_line() {
        let csv = "\
id_nat;given_name;family_name;email;civility;profession_code;skill_code;structure_id;structure_name;postal_code
;KIT;DOC;;;10;;;;
899700427885;;DOC;;;;;;;
899700427886;KIT;DOC;;;10;;;;
8997004278;KIT;DOC;;;10;;;;
399700427885;KIT;DOC;;;10;;;;
012345;KIT;DOC;;;10;;;;
899700427885;KIT;DOC;kit.example.fr;;1;;;;
899700427885;KIT;DOC;a@b@c.fr;;100;;;;
899700427885;KIT;DOC;@example.fr;;ab;;;;
899700427885;KIT;DOC;kit@;;10;;;;
899700427885;KIT;DOC;;;10;;R1;;75009
899700427885;KIT;DOC;;;10;;;;;
899700427885;KIT;DOC;kit@example.fr;M;10;SM26;;;
899700427885;KAT;DOCTEUR;kat@example.fr;MME;10;SM01;;;
899700218896;ANNE;PHARMA;;;21;;;;
";
        let errors = errors_of(csv);
        assert_error(&errors, 2, "`id_nat` is empty; it is required");
        assert_error(&errors, 3, "`given_name` is empty");
        assert_error(&errors, 3, "`profession_code` is empty");
        assert_error(&errors, 4, "id_nat `899700427886`: the RPPS number 99700427886 fails its Luhn check digit");
        assert_error(&errors, 5, "8 + an 11-digit RPPS");
        assert_error(&errors, 6, "prefix `3` is not accepted");
        assert_error(&errors, 7, "0 + a 9-character ADELI");
        assert_error(&errors, 8, "email `kit.example.fr` is not an email address");
        assert_error(&errors, 8, "profession_code `1` must be 2 digits");
        assert_error(&errors, 9, "email `a@b@c.fr`");
        assert_error(&errors, 9, "profession_code `100`");
        assert_error(&errors, 10, "email `@example.fr`");
        assert_error(&errors, 10, "profession_code `ab`");
        assert_error(&errors, 11, "email `kit@`");
        assert_error(&errors, 12, "`structure_name` is empty: an activity needs structure_id and structure_name");
        assert_error(&errors, 13, "11 fields where the header has 10 (separator `;`)");
        // Conflicts name both lines.
        assert_error(&errors, 15, "given_name `KAT` conflicts with `KIT` on line 14");
        assert_error(&errors, 15, "family_name `DOCTEUR` conflicts with `DOC` on line 14");
        assert_error(&errors, 15, "email `kat@example.fr` conflicts with `kit@example.fr` on line 14");
        assert_error(&errors, 15, "civility `MME` conflicts with `M` on line 14");
        assert_error(&errors, 15, "skill_code `SM01` conflicts with `SM26` on line 14");
        assert_eq!(errors.len(), 21, "{errors:#?}");
        assert!(errors.iter().all(|(line, _)| *line != 16), "line 16 is valid");
    }

    #[test]
    fn error_display_and_non_utf8_rows() {
        let e = ImportError { line: 3, message: "boom".into() };
        assert_eq!(e.to_string(), "line 3: boom");

        // Latin-1 "Infirmière" from a spreadsheet saved in the legacy encoding.
        let mut csv = b"id_nat;given_name;family_name;profession_code\n899700427885;L\xe9a;X;60\n".to_vec();
        csv.extend_from_slice(b"899700218896;A;B;6\n");
        let errors = parse_professionals_csv(&csv).unwrap_err();
        assert_eq!(
            errors[0],
            ImportError { line: 2, message: "not valid UTF-8: save the file as \"CSV UTF-8\"".into() }
        );
        assert_eq!(errors[1].line, 3);
        assert_eq!(errors.len(), 2);
    }

    #[test]
    fn separator_detection() {
        assert_eq!(detect_separator(b"a;b;c\nx,y,z,w,v"), b';');
        assert_eq!(detect_separator(b"a,b,c\n"), b',');
        assert_eq!(detect_separator(b"id_nat"), b',');
    }
}
