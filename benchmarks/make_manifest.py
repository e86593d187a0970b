"""Generate a realistic batchsync manifest, its emulator scenario and a demo env file.

The manifest lists gallery-app instances of about 60 SaaS vendors (``salesforce-prod``,
``servicenow-emea-sandbox``, ``workday-hr-prod``), each with the synchronizationSecret keys its
connector family uses. Every id, URL and secret is fake: URLs are on ``.example`` domains and
secrets are ``{env: NAME}`` references whose demo values go to the env file. The scenario makes
the bundled emulator serve exactly these objects, minus ``--missing`` of them.

Output depends only on the arguments, so the same command always writes the same bytes. The
YAML text is written directly, not through ``yaml.dump``, so 100,000 targets take seconds.

Example::

    python benchmarks/make_manifest.py --targets 320 --seed 1 --missing 6 \\
        --out configs/examples/onboarding.yaml \\
        --scenario-out configs/examples/onboarding.emulator.yaml \\
        --env-out configs/examples/onboarding.env
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import re
import shlex
import sys
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

TENANT_ID = "72f988bf-86f1-41af-91ab-2d7cd011db47"
TENANT_DOMAIN = "contoso.onmicrosoft.com"
CLIENT_ID = "5f7e3a1c-0d2b-4c59-9a57-8f0f1b2c3d4e"
CLIENT_SECRET_VARIABLE = "BATCHSYNC_CLIENT_SECRET"  # noqa: S105 - a variable name
CLIENT_SECRET_DEMO_VALUE = "demo-batchsync-client-secret"  # noqa: S105 - fake on purpose

# Object ids are uuid5(namespace, target name), so a name always gets the same id.
OBJECT_ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_DNS, TENANT_DOMAIN)

APPLICATION_SHARE = 0.2
SYNC_ALL_SHARE = 0.25
REDIRECT_URI = "https://portal.azure.example/TokenAuthorize"
SERVICE_ACCOUNT = "svc-entra-provisioning@contoso.example"

Family = Literal["authorization_code", "client_credentials", "token", "password"]
Extra = Literal["InstanceName", "Domain", "CompanyId", "SandboxName"]


@dataclass(frozen=True, slots=True)
class Vendor:
    """A gallery app and the credentials its provisioning connector takes.

    ``base_address`` and ``token_exchange`` may contain ``{org}``, the customer's account
    slug (``contoso``, ``contoso-emea-sandbox``). ``weight`` is the vendor's relative share of
    targets.
    """

    key: str
    stems: tuple[str, ...]
    family: Family
    base_address: str
    weight: float = 1.0
    token_exchange: str | None = None
    extras: tuple[Extra, ...] = ()

    @property
    def variable_prefix(self) -> str:
        """Prefix of the vendor's environment variables, such as ``SAP_CONCUR``."""
        return self.key.upper().replace("-", "_")


VENDORS: tuple[Vendor, ...] = (
    # OAuth authorization-code connectors: the vendor's OAuth client plus an authorization code.
    Vendor("slack", ("slack", "slack-enterprise-grid"), "authorization_code",
           "https://{org}.slack.example", 5, "https://slack.example/api/oauth.v2.access"),
    Vendor("dropbox", ("dropbox-business",), "authorization_code",
           "https://api.dropboxapi.example", 4, "https://api.dropboxapi.example/oauth2/token"),
    Vendor("box", ("box",), "authorization_code", "https://api.box.example", 4,
           "https://api.box.example/oauth2/token"),
    Vendor("docusign", ("docusign",), "authorization_code",
           "https://{org}.docusign.example/scim/v2", 4),
    Vendor("github", ("github-enterprise-cloud",), "authorization_code",
           "https://api.github.example/scim/v2/enterprises/{org}", 5,
           "https://github.example/login/oauth/access_token"),
    Vendor("google-workspace", ("google-workspace",), "authorization_code",
           "https://admin.googleapis.example", 3, "https://oauth2.googleapis.example/token",
           ("Domain",)),
    Vendor("zendesk", ("zendesk",), "authorization_code", "https://{org}.zendesk.example", 2),
    Vendor("hubspot", ("hubspot",), "authorization_code", "https://api.hubapi.example", 2),
    Vendor("asana", ("asana",), "authorization_code", "https://app.asana.example/api/1.0/scim"),
    Vendor("webex", ("webex",), "authorization_code",
           "https://webexapis.example/identity/scim/{org}/v2", 2),
    Vendor("ringcentral", ("ringcentral",), "authorization_code",
           "https://platform.ringcentral.example/scim/v2"),
    Vendor("miro", ("miro",), "authorization_code", "https://miro.example/api/v1/scim"),
    Vendor("egnyte", ("egnyte",), "authorization_code", "https://{org}.egnyte.example"),
    Vendor("linkedin", ("linkedin-learning", "linkedin-sales-navigator"), "authorization_code",
           "https://api.linkedin.example", 2, "https://www.linkedin.example/oauth/v2/accessToken"),
    Vendor("wrike", ("wrike",), "authorization_code", "https://www.wrike.example/api/v4"),
    Vendor("sharefile", ("citrix-sharefile",), "authorization_code",
           "https://{org}.sharefile.example"),
    # Client-credential connectors: a client id and secret that the vendor issued.
    Vendor("salesforce", ("salesforce",), "client_credentials",
           "https://{org}.my.salesforce.example", 6, extras=("SandboxName",)),
    Vendor("sap-concur", ("sap-concur",), "client_credentials",
           "https://us.api.concursolutions.example", 2),
    Vendor("coupa", ("coupa",), "client_credentials", "https://{org}.coupahost.example"),
    Vendor("netsuite", ("netsuite",), "client_credentials",
           "https://{org}.suitetalk.api.netsuite.example", 2),
    Vendor("adobe", ("adobe-creative-cloud", "adobe-experience-cloud"), "client_credentials",
           "https://usermanagement.adobe.example/v2/usermanagement", 3),
    Vendor("marketo", ("marketo",), "client_credentials", "https://{org}.mktorest.example"),
    Vendor("veeva", ("veeva-vault",), "client_credentials", "https://{org}.veevavault.example"),
    Vendor("sap-ariba", ("sap-ariba",), "client_credentials", "https://{org}.ariba.example"),
    Vendor("cornerstone", ("cornerstone",), "client_credentials", "https://{org}.csod.example"),
    Vendor("autodesk", ("autodesk",), "client_credentials",
           "https://developer.api.autodesk.example"),
    Vendor("pagerduty", ("pagerduty",), "client_credentials", "https://api.pagerduty.example"),
    Vendor("docebo", ("docebo",), "client_credentials", "https://{org}.docebosaas.example"),
    Vendor("anaplan", ("anaplan",), "client_credentials", "https://{org}.anaplan.example"),
    Vendor("outreach", ("outreach",), "client_credentials", "https://api.outreach.example"),
    # Token connectors: a SCIM endpoint and a long-lived bearer token.
    Vendor("zoom", ("zoom",), "token", "https://api.zoom.example/scim2", 5),
    Vendor("atlassian", ("atlassian-cloud",), "token",
           "https://api.atlassian.example/scim/directory/{org}", 5),
    Vendor("tableau", ("tableau-online",), "token", "https://{org}.online.tableau.example/api/scim",
           2),
    Vendor("smartsheet", ("smartsheet",), "token", "https://scim.smartsheet.example/v2", 2),
    Vendor("monday", ("monday",), "token", "https://{org}.monday.example/scim", 2),
    Vendor("figma", ("figma",), "token", "https://www.figma.example/scim/v2/{org}", 2),
    Vendor("lucid", ("lucid",), "token", "https://users.lucid.example/scim/v2"),
    Vendor("notion", ("notion",), "token", "https://api.notion.example/scim/v2", 2),
    Vendor("freshservice", ("freshservice",), "token",
           "https://{org}.freshservice.example/scim/v2"),
    Vendor("jamf", ("jamf-pro",), "token", "https://{org}.jamfcloud.example/scim"),
    Vendor("cisco-umbrella", ("cisco-umbrella",), "token",
           "https://api.umbrella.example/identities/v2/scim/{org}"),
    Vendor("keeper", ("keeper",), "token", "https://keepersecurity.example/api/rest/scim/v2/{org}"),
    Vendor("datadog", ("datadog",), "token", "https://{org}.datadoghq.example/api/v2/scim", 2),
    Vendor("new-relic", ("new-relic",), "token",
           "https://scim-provisioning.service.newrelic.example/scim/v2"),
    Vendor("gitlab", ("gitlab",), "token", "https://{org}.gitlab.example/api/scim/v2", 2),
    Vendor("jfrog", ("jfrog",), "token", "https://{org}.jfrog.example/access/api/v1/scim/v2"),
    Vendor("snowflake", ("snowflake",), "token",
           "https://{org}.snowflakecomputing.example/scim/v2", 2),
    Vendor("databricks", ("databricks",), "token",
           "https://{org}.cloud.databricks.example/api/2.0/preview/scim", 2),
    Vendor("aws", ("aws-iam-identity-center",), "token",
           "https://scim.us-east-1.amazonaws.example/{org}/scim/v2", 3),
    Vendor("zscaler", ("zscaler-internet-access",), "token", "https://{org}.zscaler.example/scim"),
    Vendor("mural", ("mural",), "token", "https://app.mural.example/api/v0/scim"),
    Vendor("bitwarden", ("bitwarden",), "token", "https://{org}.bitwarden.example/scim/v2"),
    Vendor("sentry", ("sentry",), "token",
           "https://sentry.example/api/0/organizations/{org}/scim/v2"),
    Vendor("clickup", ("clickup",), "token", "https://api.clickup.example/scim/v2"),
    Vendor("airtable", ("airtable",), "token", "https://airtable.example/scim/v2"),
    Vendor("calendly", ("calendly",), "token", "https://api.calendly.example/scim/v2"),
    # Password connectors: a service account's user name and password.
    Vendor("servicenow", ("servicenow",), "password", "https://{org}.service-now.example", 5,
           extras=("InstanceName",)),
    Vendor("workday", ("workday",), "password",
           "https://wd5-services1.workday.example/ccx/service/{org}/Human_Resources/v21.1", 4),
    Vendor("successfactors", ("sap-successfactors",), "password",
           "https://api4.successfactors.example/odata/v2", 2, extras=("CompanyId",)),
    Vendor("oracle", ("oracle-fusion-hcm",), "password",
           "https://{org}.fa.oraclecloud.example/hcmRestApi/scim"),
    Vendor("ukg", ("ukg-pro",), "password", "https://service4.ultipro.example/services",
           extras=("CompanyId",)),
)  # fmt: skip

ENVIRONMENTS = ("prod", "sandbox", "staging", "dev", "test", "uat")
REGIONS = ("us", "eu", "emea", "apac", "uk", "de", "fr", "jp", "au", "ca", "latam", "in")
BUSINESS_UNITS = (
    "hr", "finance", "legal", "eng", "marketing", "sales", "pmo", "it", "support", "ops", "bi",
    "security", "procurement", "research",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Target:
    """One generated target: its vendor, name parts and directory object."""

    vendor: Vendor
    name: str
    qualifier: str
    kind: Literal["service_principal", "application"]
    object_id: str
    sync_all: bool


# Name generation ----------------------------------------------------------------------------


def qualifier_tiers() -> list[list[str]]:
    """Return name qualifiers grouped from the most common shape to the rarest.

    A tenant usually has ``salesforce-prod`` long before ``salesforce-hr-emea-uat``, so names
    are drawn tier by tier.
    """
    primary = ["", "prod", "sandbox"]
    common = [*REGIONS, *BUSINESS_UNITS]
    rarer = [
        *ENVIRONMENTS[2:],
        *(f"{region}-{environment}" for region in REGIONS for environment in ENVIRONMENTS),
        *(f"{unit}-{environment}" for unit in BUSINESS_UNITS for environment in ENVIRONMENTS),
    ]
    rarest = [
        f"{unit}-{region}{suffix}"
        for unit in BUSINESS_UNITS
        for region in REGIONS
        for suffix in ("", *(f"-{environment}" for environment in ENVIRONMENTS))
    ]

    return [primary, common, rarer, rarest]


def vendor_names(vendor: Vendor, seed: int, tiers: list[list[str]]) -> Iterator[tuple[str, str]]:
    """Yield the vendor's (name, qualifier) pairs in the order the generator hands them out.

    Each vendor has its own random stream, so its first names stay the same when ``--targets``
    changes. Once every combination is used, names get the numbered suffixes ``-2``, ``-3``...
    """
    rng = random.Random(f"{seed}:{vendor.key}")
    ordered: list[tuple[str, str]] = []
    for tier in tiers:
        names = [
            (f"{stem}-{qualifier}" if qualifier else stem, qualifier)
            for stem in vendor.stems
            for qualifier in tier
        ]
        rng.shuffle(names)
        ordered.extend(names)
        yield from names
    for number in itertools.count(2):
        for name, qualifier in ordered:
            numbered = f"{qualifier}-{number}" if qualifier else str(number)
            yield f"{name}-{number}", numbered


def generate_targets(count: int, seed: int) -> list[Target]:
    """Pick ``count`` unique target names across vendors and build their targets, sorted by name."""
    rng = random.Random(seed)
    tiers = qualifier_tiers()
    streams = {vendor.key: vendor_names(vendor, seed, tiers) for vendor in VENDORS}
    # Names a vendor can take before it needs numbered suffixes.
    capacity = {
        vendor.key: len(vendor.stems) * sum(len(tier) for tier in tiers) for vendor in VENDORS
    }
    drawn = dict.fromkeys(capacity, 0)

    picked: dict[str, tuple[Vendor, str]] = {}
    exhausted = 0
    while len(picked) < count:
        # A vendor that has used all its unnumbered names drops out of the draw until every
        # vendor has, so numbered names appear only once all unnumbered ones are used.
        candidates = [vendor for vendor in VENDORS if drawn[vendor.key] < capacity[vendor.key]]
        candidates = candidates or list(VENDORS)
        weights = [vendor.weight for vendor in candidates]
        for vendor in rng.choices(candidates, weights, k=count - len(picked)):
            if drawn[vendor.key] >= capacity[vendor.key] and exhausted < len(VENDORS):
                continue
            # Stems of different vendors could produce the same name, so skip taken names.
            for name, qualifier in streams[vendor.key]:
                if name not in picked:
                    picked[name] = (vendor, qualifier)
                    break
            drawn[vendor.key] += 1
            if drawn[vendor.key] == capacity[vendor.key]:
                exhausted += 1
                if exhausted == len(VENDORS):
                    # Draw the rest from all vendors, not from the last few candidates.
                    break

    targets = []
    for name in sorted(picked):
        vendor, qualifier = picked[name]
        kind: Literal["service_principal", "application"] = (
            "application" if rng.random() < APPLICATION_SHARE else "service_principal"
        )
        sync_all = vendor.family == "token" and rng.random() < SYNC_ALL_SHARE
        object_id = str(uuid.uuid5(OBJECT_ID_NAMESPACE, name))
        targets.append(Target(vendor, name, qualifier, kind, object_id, sync_all))

    return targets


# Credentials --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Credential:
    """One synchronizationSecret entry: an environment variable or a literal value."""

    key: str
    env: str | None = None
    value: str | None = None


def account_slug(qualifier: str) -> str:
    """Return the customer's account name at the vendor: ``contoso`` or ``contoso-emea-sandbox``."""
    if qualifier in ("", "prod"):
        return "contoso"

    return f"contoso-{qualifier}"


def credentials_for(target: Target) -> list[Credential]:
    """Build the credentials of ``target`` from its vendor's connector family and extras."""
    vendor = target.vendor
    prefix = vendor.variable_prefix
    org = account_slug(target.qualifier)
    base_address = Credential("BaseAddress", value=vendor.base_address.format(org=org))

    credentials: list[Credential]
    if vendor.family == "authorization_code":
        credentials = [
            Credential("Oauth2ClientId", env=f"{prefix}_CLIENT_ID"),
            Credential("Oauth2ClientSecret", env=f"{prefix}_CLIENT_SECRET"),
            Credential("Oauth2AuthorizationCode", env=f"{prefix}_AUTHORIZATION_CODE"),
            Credential("Oauth2RedirectUri", value=REDIRECT_URI),
            base_address,
        ]
        if vendor.token_exchange is not None:
            exchange = vendor.token_exchange.format(org=org)
            credentials.append(Credential("Oauth2TokenExchangeUri", value=exchange))
    elif vendor.family == "client_credentials":
        credentials = [
            Credential("ClientIdentifier", env=f"{prefix}_CLIENT_ID"),
            Credential("ClientSecret", env=f"{prefix}_CLIENT_SECRET"),
            base_address,
        ]
    elif vendor.family == "token":
        credentials = [base_address, Credential("SecretToken", env=f"{prefix}_SECRET_TOKEN")]
        if target.sync_all:
            credentials.append(Credential("SyncAll", value="True"))
    else:
        credentials = [
            Credential("UserName", value=SERVICE_ACCOUNT),
            Credential("Password", env=f"{prefix}_PASSWORD"),
            base_address,
        ]

    credentials.extend(_extra_credentials(vendor, target.qualifier, org))

    return credentials


def _extra_credentials(vendor: Vendor, qualifier: str, org: str) -> list[Credential]:
    extras = []
    if "InstanceName" in vendor.extras:
        extras.append(Credential("InstanceName", value=org))
    if "Domain" in vendor.extras:
        regions = [part for part in qualifier.split("-") if part in REGIONS]
        domain = f"{regions[0]}.contoso.example" if regions else "contoso.example"
        extras.append(Credential("Domain", value=domain))
    if "CompanyId" in vendor.extras:
        extras.append(Credential("CompanyId", value=org.replace("-", "").upper()))
    if "SandboxName" in vendor.extras and "sandbox" in qualifier.split("-"):
        extras.append(Credential("SandboxName", value=qualifier.replace("-", "")))

    return extras


def demo_value(variable: str) -> str:
    """Return an obviously fake value for ``variable``: ``demo-salesforce-client-secret``."""
    return "demo-" + variable.lower().replace("_", "-")


# YAML text ----------------------------------------------------------------------------------

# A plain scalar of these characters that starts with a letter is always read back as a string,
# unless it is one of YAML 1.1's boolean or null words.
_PLAIN = re.compile(r"[A-Za-z][A-Za-z0-9._/:@-]*")
_YAML_WORDS = frozenset({"y", "n", "yes", "no", "true", "false", "on", "off", "null"})


def yaml_scalar(text: str) -> str:
    """Return ``text`` as a YAML scalar that is read back as the same string."""
    if _PLAIN.fullmatch(text) and text.lower() not in _YAML_WORDS and not text.endswith(":"):
        return text

    # A JSON string is also a valid double-quoted YAML scalar.
    return json.dumps(text)


def render_manifest(
    targets: Sequence[Target], args: argparse.Namespace, command: str
) -> tuple[str, set[str]]:
    """Return the manifest text and the environment variables it references."""
    variables = {CLIENT_SECRET_VARIABLE}
    lines = [
        *_manifest_header(targets, args, command),
        "version: 1",
        f"tenant: {TENANT_DOMAIN}",
        "cloud: global",
        "api_version: v1.0",
        "auth:",
        f"  client_id: {CLIENT_ID}",
        f"  client_secret: {{env: {CLIENT_SECRET_VARIABLE}}}",
        "limits:",
        f"  concurrency: {args.concurrency}",
        f"  requests_per_second: {args.rate:g}",
        "  max_attempts: 6",
        "  request_timeout_seconds: 30",
        "targets:",
    ]
    for target in targets:
        lines.append(f"  - name: {target.name}")
        lines.append(f"    {target.kind}: {target.object_id}")
        lines.append("    credentials:")
        for credential in credentials_for(target):
            if credential.env is not None:
                variables.add(credential.env)
                lines.append(f"      {credential.key}: {{env: {credential.env}}}")
            else:
                value = yaml_scalar(credential.value or "")
                lines.append(f"      {credential.key}: {{value: {value}}}")

    return "\n".join(lines) + "\n", variables


def _manifest_header(
    targets: Sequence[Target], args: argparse.Namespace, command: str
) -> list[str]:
    applications = sum(1 for target in targets if target.kind == "application")
    header = [
        f"# batchsync manifest: {len(targets)} gallery-app instances of the {TENANT_DOMAIN} demo",
        f"# tenant ({len(targets) - applications} service principals, {applications} applications).",
        "# Every object id, URL and secret in it is fake, and every URL is on an .example domain.",
        "#",
        "# Generated; rerun the command instead of editing by hand:",
        f"#   {command}",
        "#",
        "# Secrets are {env: NAME} references. All instances of a vendor share one set of",
        "# variables to keep the env file short, where a real tenant has one per instance.",
    ]
    if args.env_out is None:
        return [*header, ""]

    header += [
        "#",
        "# Try it against the bundled Graph emulator, which listens on loopback only:",
        f"#   . {shlex.quote(str(args.env_out))}",
        f"#   batchsync validate {shlex.quote(str(args.out))}",
    ]
    run = f"batchsync run --emulator {shlex.quote(str(args.out))}"
    if args.scenario_out is None:
        return [*header, f"#   {run}", ""]

    default_scenario = args.out.with_name(f"{args.out.stem}.emulator.yaml")
    if args.scenario_out.resolve() != default_scenario.resolve():
        run += f" --emulator-scenario {shlex.quote(str(args.scenario_out))}"
    header += [
        f"#   {run}",
        f"# The scenario {args.scenario_out.name} marks {args.missing} of the objects missing, so",
        "# those targets fail with 404, and answers 2% of calls with 503 and Retry-After: 1,",
        "# so the run shows retries.",
    ]

    return [*header, ""]


def render_scenario(
    targets: Sequence[Target], missing: Sequence[Target], seed: int, command: str
) -> str:
    """Return the emulator scenario text that serves ``targets`` except ``missing``."""
    lines = [
        f"# Graph emulator scenario for the {len(targets)}-target demo manifest beside it.",
        "# Generated; rerun the command instead of editing by hand:",
        f"#   {command}",
        "",
        "# Seeds the emulator's random choices: latency, fault selection, token lifetimes.",
        f"seed: {seed}",
        "# Delay added to each Graph response, drawn uniformly, to look like a real network.",
        "latency_ms: {min: 5, max: 40}",
        "",
        "tenants:",
        f"  - id: {TENANT_ID}",
        f"    domains: [{TENANT_DOMAIN}]",
        "",
        "# The app registration batchsync signs in as. Its secret is the demo value of",
        f"# {CLIENT_SECRET_VARIABLE} in the env file.",
        "apps:",
        f"  - client_id: {CLIENT_ID}",
        f"    tenant: {TENANT_ID}",
        f"    secrets: [{yaml_scalar(CLIENT_SECRET_DEMO_VALUE)}]",
        "    permissions: [Synchronization.ReadWrite.All]",
        "",
        '# "*" makes every GUID an existing object, except the ids under missing, which get 404.',
        "directory:",
        '  service_principals: "*"',
        '  applications: "*"',
    ]
    if missing:
        lines.append("  missing:")
        lines.extend(f"    - {target.object_id}  # {target.name}" for target in missing)
    else:
        lines.append("  missing: []")
    lines += [
        "",
        "# Graph's identity throttling for a tenant under 50 users: 3,500 resource units per",
        "# 10 seconds and 3,000 writes per 150 seconds per app and tenant. Each",
        "# acquireAccessToken call costs one of each.",
        "throttling:",
        "  tenant_size: small",
        "  writes: {burst: 3000, rate: 20}",
        "",
        "# About 2% of Graph calls get 503 with Retry-After: 1, so the demo shows retries.",
        "faults:",
        "  - kind: status",
        "    status: 503",
        "    code: serviceNotAvailable",
        '    retry_after: "1"',
        "    rate: 0.02",
    ]

    return "\n".join(lines) + "\n"


def render_env(variables: set[str], manifest_path: Path, env_path: Path) -> str:
    """Return a shell file that exports a demo value for every variable in ``variables``."""
    lines = [
        f"# Demo values for the environment variables that {manifest_path.name} references.",
        "# None of them is a real credential. Load them into the current shell with:",
        f"#   . {shlex.quote(str(env_path))}",
    ]
    for variable in sorted(variables):
        value = CLIENT_SECRET_DEMO_VALUE if variable == CLIENT_SECRET_VARIABLE else None
        lines.append(f"export {variable}='{value or demo_value(variable)}'")

    return "\n".join(lines) + "\n"


# Command line -------------------------------------------------------------------------------


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")

    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")

    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {text}")

    return value


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser."""
    parser = argparse.ArgumentParser(
        description="Write a realistic batchsync manifest of gallery-app targets, plus the "
        "matching emulator scenario and a demo env file.",
    )
    parser.add_argument(
        "--targets", type=_positive_int, default=320, help="number of targets (default 320)"
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=1,
        help="random seed; the same arguments always write the same files (default 1)",
    )
    parser.add_argument(
        "--missing",
        type=_non_negative_int,
        default=0,
        help="number of targets the scenario marks missing, so they fail with 404 (default 0)",
    )
    parser.add_argument(
        "--concurrency",
        type=_positive_int,
        default=8,
        help="limits.concurrency: requests in flight at once (default 8)",
    )
    parser.add_argument(
        "--rate",
        type=_positive_float,
        default=20.0,
        metavar="RPS",
        help="limits.requests_per_second (default 20)",
    )
    parser.add_argument("--out", type=Path, required=True, help="manifest file to write")
    parser.add_argument(
        "--scenario-out", type=Path, help="emulator scenario file to write (default: none)"
    )
    parser.add_argument(
        "--env-out", type=Path, help="shell file of demo variable values to write (default: none)"
    )

    return parser


def _command_line(argv: Sequence[str]) -> str:
    return shlex.join(["python", "benchmarks/make_manifest.py", *argv])


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the arguments and write the requested files; return the exit code."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(arguments)
    if args.missing > args.targets:
        parser.error(f"--missing ({args.missing}) must not exceed --targets ({args.targets})")
    command = _command_line(arguments)

    targets = generate_targets(args.targets, args.seed)
    # A separate stream, so the choice of missing targets does not shift the other choices.
    missing_rng = random.Random(f"{args.seed}:missing")
    missing_indexes = sorted(missing_rng.sample(range(len(targets)), args.missing))
    missing = [targets[index] for index in missing_indexes]

    manifest, variables = render_manifest(targets, args, command)
    _write(args.out, manifest)
    if args.scenario_out is not None:
        _write(args.scenario_out, render_scenario(targets, missing, args.seed, command))
    if args.env_out is not None:
        _write(args.env_out, render_env(variables, args.out, args.env_out))
    print(
        f"wrote {args.out}: {len(targets)} targets, {len(variables)} environment variables",
        file=sys.stderr,
    )

    return 0


if __name__ == "__main__":
    sys.exit(main())
