//! `cosell crm export --format dataverse DIR`: the connector's schema as the files of an unmanaged
//! Dataverse solution (`solution.xml`, `customizations.xml`, `[Content_Types].xml`), for an admin
//! who zips them and imports the solution by hand instead of running `cosell crm install`.
//!
//! Layout of an exported unmanaged solution (Microsoft Learn, "Solution concepts" / SolutionPackager
//! "Solution component file reference"): `solution.xml` holds `ImportExportXml/SolutionManifest` with
//! `UniqueName`, `LocalizedNames`, `Version`, `Managed` (0), the `Publisher` (`UniqueName`,
//! `CustomizationPrefix`, `CustomizationOptionValuePrefix`) and `RootComponents` (type 1 = Entity;
//! behavior 0 includes the table's sub-components, 2 only the named ones) **[D]**;
//! `customizations.xml` holds `ImportExportXml/Entities/Entity/EntityInfo/entity/attributes/attribute`
//! (`Type` bit / nvarchar / ntext / picklist / multiselectpicklist / lookup, `Format`, `MaxLength`,
//! local `optionset` with `options/option@value`, `displaynames`), `EntityKeys`, and
//! `EntityRelationships/EntityRelationship` (OneToMany, referencing/referenced entity and attribute,
//! cascade settings) **[D]** — the element set below is the subset those files need for these column
//! types; Dataverse fills the rest with defaults on import **[I]**.

use std::path::{Path, PathBuf};

use super::{ConnectorSchema, FieldKind, FieldSpec, SchemaError, write_file, xml_escape as x};

fn labels(tag: &str, inner: &str, text: &str) -> String {
    format!("<{tag}><{inner} description=\"{}\" languagecode=\"1033\" /></{tag}>", x(text))
}

fn attribute(f: &FieldSpec) -> Result<String, SchemaError> {
    let mut out = format!("<attribute PhysicalName=\"{}\">", x(&f.name));
    let (ty, extra) = match &f.kind {
        FieldKind::Boolean => (
            "bit",
            format!(
                "<AppDefaultValue>0</AppDefaultValue><optionset Name=\"{o}_{n}\"><OptionSetType>bit</OptionSetType><options>\
                 <option value=\"1\">{yes}</option><option value=\"0\">{no}</option></options></optionset>",
                o = x(&f.object),
                n = x(&f.name),
                yes = labels("labels", "label", "Yes"),
                no = labels("labels", "label", "No"),
            ),
        ),
        FieldKind::Text { max_length } => {
            ("nvarchar", format!("<Format>text</Format><MaxLength>{max_length}</MaxLength>"))
        }
        FieldKind::Url { max_length } => {
            ("nvarchar", format!("<Format>url</Format><MaxLength>{max_length}</MaxLength>"))
        }
        FieldKind::LongText { max_length } => {
            ("ntext", format!("<Format>TextArea</Format><MaxLength>{max_length}</MaxLength>"))
        }
        FieldKind::Picklist { options, multi } => {
            let mut opts = String::new();
            for o in options {
                let value = super::dynamics::option_value(f, o)?;
                opts.push_str(&format!("<option value=\"{value}\">{}</option>", labels("labels", "label", &o.label)));
            }
            let ty = if *multi { "multiselectpicklist" } else { "picklist" };
            (
                ty,
                format!(
                    "<optionset Name=\"{o}_{n}\"><OptionSetType>picklist</OptionSetType><IsGlobal>0</IsGlobal><options>{opts}</options></optionset>",
                    o = x(&f.object),
                    n = x(&f.name)
                ),
            )
        }
        FieldKind::Lookup { target, .. } => (
            "lookup",
            format!(
                "<LookupStyle>single</LookupStyle><LookupTypes><LookupType>{}</LookupType></LookupTypes>",
                x(target)
            ),
        ),
    };
    let required = if f.required { "required" } else { "none" };
    let mask = if f.primary_name {
        "PrimaryName|ValidForAdvancedFind|ValidForForm|ValidForGrid|RequiredForForm"
    } else {
        "ValidForAdvancedFind|ValidForForm|ValidForGrid"
    };
    out.push_str(&format!(
        "<Type>{ty}</Type><Name>{n}</Name><LogicalName>{n}</LogicalName><RequiredLevel>{required}</RequiredLevel>\
         <DisplayMask>{mask}</DisplayMask><IsCustomField>1</IsCustomField>{extra}{}{}</attribute>",
        labels("displaynames", "displayname", &f.label),
        labels("Descriptions", "Description", &f.description),
        n = x(&f.name),
    ));
    Ok(out)
}

/// `customizations.xml`.
pub(crate) fn customizations(schema: &ConnectorSchema) -> Result<String, SchemaError> {
    let mut entities = String::new();
    for object in schema.objects() {
        let table = schema.tables.iter().find(|t| t.name == object);
        let mut attrs = String::new();
        for f in schema.fields_of(object) {
            attrs.push_str(&attribute(f)?);
        }
        let mut keys = String::new();
        for k in schema.keys.iter().filter(|k| k.object == object) {
            let names: String = k.fields.iter().map(|a| format!("<AttributeName>{}</AttributeName>", x(a))).collect();
            keys.push_str(&format!(
                "<EntityKey><LogicalName>{n}</LogicalName><Name>{n}</Name><EntityKeyAttributes>{names}</EntityKeyAttributes>{}</EntityKey>",
                labels("displaynames", "displayname", &k.label),
                n = x(&k.name)
            ));
        }
        let info = match table {
            Some(t) => format!(
                "<entity Name=\"{n}\">{}{}{}<attributes>{attrs}</attributes><EntitySetName>{set}</EntitySetName>\
                 <OwnershipTypeMask>UserOwned</OwnershipTypeMask><IsCustomizable>1</IsCustomizable>\
                 <ChangeTrackingEnabled>1</ChangeTrackingEnabled><EntityKeys>{keys}</EntityKeys></entity>",
                labels("LocalizedNames", "LocalizedName", &t.label),
                labels("LocalizedCollectionNames", "LocalizedCollectionName", &t.plural_label),
                labels("Descriptions", "Description", &t.description),
                n = x(&t.name),
                set = x(&t.collection),
            ),
            None => format!(
                "<entity Name=\"{n}\"><attributes>{attrs}</attributes><EntityKeys>{keys}</EntityKeys></entity>",
                n = x(object)
            ),
        };
        entities.push_str(&format!("<Entity><Name>{}</Name><EntityInfo>{info}</EntityInfo></Entity>", x(object)));
    }
    let mut relationships = String::new();
    for f in &schema.fields {
        if let FieldKind::Lookup { target, relationship } = &f.kind {
            relationships.push_str(&format!(
                "<EntityRelationship Name=\"{r}\"><EntityRelationshipType>OneToMany</EntityRelationshipType>\
                 <IsCustomizable>1</IsCustomizable><IsHierarchical>0</IsHierarchical>\
                 <ReferencingEntityName>{child}</ReferencingEntityName><ReferencedEntityName>{parent}</ReferencedEntityName>\
                 <CascadeAssign>NoCascade</CascadeAssign><CascadeDelete>Cascade</CascadeDelete>\
                 <CascadeReparent>NoCascade</CascadeReparent><CascadeShare>NoCascade</CascadeShare>\
                 <CascadeUnshare>NoCascade</CascadeUnshare><CascadeMerge>NoCascade</CascadeMerge>\
                 <ReferencingAttributeName>{lookup}</ReferencingAttributeName>\
                 <ReferencedEntityNavigationPropertyName>{r}</ReferencedEntityNavigationPropertyName>\
                 <ReferencingEntityNavigationPropertyName>{lookup}</ReferencingEntityNavigationPropertyName>\
                 </EntityRelationship>",
                r = x(relationship),
                child = x(&f.object),
                parent = x(target),
                lookup = x(&f.name),
            ));
        }
    }
    Ok(format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<ImportExportXml xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\">\
         <Entities>{entities}</Entities><Roles /><Workflows /><FieldSecurityProfiles /><Templates /><EntityMaps />\
         <EntityRelationships>{relationships}</EntityRelationships><OrganizationSettings /><optionsets />\
         <Languages><Language>1033</Language></Languages></ImportExportXml>\n"
    ))
}

/// `solution.xml`.
pub(crate) fn solution(schema: &ConnectorSchema) -> String {
    let p = &schema.package;
    let roots: String = schema
        .objects()
        .iter()
        .map(|o| {
            // The connector's own table comes whole; of a standard table only the named columns.
            let behavior = if schema.owns_table(o) { 0 } else { 2 };
            format!("<RootComponent type=\"1\" schemaName=\"{}\" behavior=\"{behavior}\" />", x(o))
        })
        .collect();
    format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<ImportExportXml version=\"9.2.0.0\" SolutionPackageVersion=\"9.2\" \
         languagecode=\"1033\" xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\"><SolutionManifest>\
         <UniqueName>{un}</UniqueName>{names}{desc}<Version>{v}</Version><Managed>0</Managed>\
         <Publisher><UniqueName>{pun}</UniqueName>{pnames}<Descriptions /><CustomizationPrefix>{prefix}</CustomizationPrefix>\
         <CustomizationOptionValuePrefix>{ovp}</CustomizationOptionValuePrefix></Publisher>\
         <RootComponents>{roots}</RootComponents><MissingDependencies /></SolutionManifest></ImportExportXml>\n",
        un = x(&p.unique_name),
        names = labels("LocalizedNames", "LocalizedName", &p.display_name),
        desc = labels("Descriptions", "Description", &p.description),
        v = x(&p.version),
        pun = x(&p.publisher.unique_name),
        pnames = labels("LocalizedNames", "LocalizedName", &p.publisher.display_name),
        prefix = x(&p.publisher.prefix),
        ovp = p.publisher.option_value_prefix,
    )
}

const CONTENT_TYPES: &str = "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<Types xmlns=\"http://schemas.openxmlformats.org/package/2006/content-types\">\
<Default Extension=\"xml\" ContentType=\"application/octet-stream\" /></Types>\n";

/// Writes the three files under `dir`.
pub(crate) fn write(schema: &ConnectorSchema, dir: &Path) -> Result<Vec<PathBuf>, SchemaError> {
    Ok(vec![
        write_file(&dir.join("solution.xml"), &solution(schema))?,
        write_file(&dir.join("customizations.xml"), &customizations(schema)?)?,
        write_file(&dir.join("[Content_Types].xml"), CONTENT_TYPES)?,
    ])
}
