"""Tests for loading and validating manifests: every rejected input, located, and valid loads."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import batchsync.manifest
from batchsync.credentials import Reference, resolve
from batchsync.errors import ManifestError, ManifestProblem
from batchsync.manifest import load_manifest

SECRET_ENV = "BATCHSYNC_TEST_SECRET"
UNSET_ENV = "BATCHSYNC_TEST_UNSET"
SECRET = "canary-Secret-7f3a9c"

# Line numbers in the cases below count from this text: auth is on line 3, the first target on
# line 7, its credentials on lines 10 and 11, and a line appended to it becomes line 12.
BASE = f"""\
version: 1
tenant: Contoso.onmicrosoft.com
auth:
  client_id: 11111111-2222-3333-4444-555555555555
  client_secret: {{env: {SECRET_ENV}}}
targets:
  - name: salesforce
    service_principal: 0F1E2D3C-4B5A-6978-8796-A5B4C3D2E1F0
    credentials:
      BaseAddress: {{value: https://contoso.my.salesforce.com}}
      SecretToken: {{env: {SECRET_ENV}}}
"""

SECOND_TARGET = """\
  - name: workday
    application: 22222222-3333-4444-5555-666666666666
    credentials:
      UserName: {value: isu_batchsync}
"""


def billion_laughs(levels: int) -> str:
    """Return YAML whose last key, expanded, would be 9 ** (levels + 1) strings."""
    first = "a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
    rest = "".join(
        f"a{level}: &a{level} [{', '.join([f'*a{level - 1}'] * 9)}]\n"
        for level in range(1, levels + 1)
    )

    return first + rest


def edit(old: str, new: str) -> str:
    """Return BASE with its only occurrence of ``old`` replaced by ``new``."""
    assert BASE.count(old) == 1, f"{old!r} must occur exactly once in BASE"

    return BASE.replace(old, new)


def with_token(reference: str) -> str:
    """Return BASE with the SecretToken reference on line 11 replaced by ``reference``."""
    return edit(f"SecretToken: {{env: {SECRET_ENV}}}", f"SecretToken: {reference}")


@pytest.fixture(autouse=True, name="clean_environ")
def fixture_clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """Set the secret variable the manifests refer to, and make sure the unset one is unset."""
    monkeypatch.setenv(SECRET_ENV, SECRET)
    monkeypatch.delenv(UNSET_ENV, raising=False)


def write(folder: Path, content: str | bytes, name: str = "manifest.yaml") -> Path:
    """Write ``content`` to ``folder/name`` and return the path."""
    path = folder / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")

    return path


def problems_of(path: Path) -> list[ManifestProblem]:
    """Load ``path``, expect it to be rejected, and return the problems found."""
    with pytest.raises(ManifestError) as caught:
        load_manifest(path)

    return caught.value.problems


@dataclass(frozen=True)
class Bad:
    """One rejected input: the manifest (None: no file at all), and where and why it fails."""

    text: str | bytes | None
    line: int
    fragment: str
    files: dict[str, bytes] = field(default_factory=dict)
    max_bytes: int | None = None
    error: type[Exception] = ManifestError


BAD_INPUTS = [
    pytest.param(Bad("", 1, "the file is empty"), id="empty-file"),
    pytest.param(Bad("  \n\n   \n", 1, "the file is empty"), id="whitespace-only"),
    pytest.param(Bad("version: 1\ntenant: [contoso\n", 3, "invalid YAML"), id="not-yaml"),
    pytest.param(Bad("- version: 1\n- tenant: x\n", 1, "found a list"), id="yaml-list"),
    pytest.param(Bad("just some text\n", 1, "found a single value"), id="yaml-scalar"),
    pytest.param(
        Bad("version: 1\nauth:\n\tclient_id: x\n", 3, "a tab is used for indentation"),
        id="tab-indentation",
    ),
    pytest.param(
        Bad(edit("auth:\n", "tenant: fabrikam.com\nauth:\n"), 3, 'duplicate key "tenant"'),
        id="duplicate-key",
    ),
    pytest.param(
        Bad(BASE + "defaults: &defaults {concurrency: 4}\nlimits: *defaults\n", 12, "aliases"),
        id="anchor-alias",
    ),
    pytest.param(Bad(billion_laughs(9), 1, "anchors and aliases"), id="billion-laughs"),
    pytest.param(
        Bad(BASE + "# " + "x" * 1024 * 1024 + "\n", 1, "over the 1 MiB limit", max_bytes=1 << 20),
        id="over-size-limit",
    ),
    pytest.param(
        Bad(edit("version: 1\n", ""), 1, 'required key "version" is missing'),
        id="version-missing",
    ),
    pytest.param(
        Bad(edit("version: 1", "version: 2"), 1, "must be one of 1; got the number 2"),
        id="version-2",
    ),
    pytest.param(
        Bad(edit("version: 1", 'version: "1"'), 1, 'got the string "1"; write it without quotes'),
        id="version-string",
    ),
    pytest.param(
        Bad(edit("version: 1", "version: true"), 1, "got the boolean true"),
        id="version-boolean",
    ),
    pytest.param(
        Bad(BASE + "limits:\n  concurrency: eight\n", 13, 'integer; got the string "eight"'),
        id="concurrency-string",
    ),
    pytest.param(
        Bad(BASE + "limits:\n  requests_per_second: true\n", 13, "number; got the boolean true"),
        id="rate-boolean",
    ),
    pytest.param(
        Bad(BASE + "limit:\n  concurrency: 4\n", 12, 'unknown key "limit"; did you mean "limits"?'),
        id="unknown-top-level-key",
    ),
    pytest.param(
        Bad(edit("  client_secret:", "  client_ids: x\n  client_secret:"), 5, 'mean "client_id"?'),
        id="unknown-auth-key",
    ),
    pytest.param(
        Bad(BASE + "limits:\n  concurency: 4\n", 13, 'did you mean "concurrency"?'),
        id="unknown-limits-key",
    ),
    pytest.param(
        Bad(edit("    credentials:\n", "    nmae: x\n    credentials:\n"), 9, 'mean "name"?'),
        id="unknown-target-key",
    ),
    pytest.param(
        Bad(edit("salesforce.com}", "salesforce.com, fle: x}"), 10, 'did you mean "file"?'),
        id="unknown-reference-key",
    ),
    pytest.param(
        Bad(edit("salesforce.com}", "salesforce.com, colour: red}"), 10, "allowed keys are env"),
        id="unknown-reference-key-not-close",
    ),
    pytest.param(
        Bad(
            edit(
                "    credentials:\n",
                "    application: 22222222-0000-0000-0000-000000000000\n    credentials:\n",
            ),
            7,
            "found both",
        ),
        id="both-object-kinds",
    ),
    pytest.param(
        Bad(
            edit("    service_principal: 0F1E2D3C-4B5A-6978-8796-A5B4C3D2E1F0\n", ""), 7, "neither"
        ),
        id="neither-object-kind",
    ),
    pytest.param(
        Bad(
            edit("0F1E2D3C-4B5A-6978-8796-A5B4C3D2E1F0", "0f1e2d3c"), 8, '"0f1e2d3c" is not a GUID'
        ),
        id="object-id-not-guid",
    ),
    pytest.param(
        Bad(edit("11111111-2222-3333-4444-555555555555", "my-app"), 4, '"my-app" is not a GUID'),
        id="client-id-not-guid",
    ),
    pytest.param(
        Bad(
            BASE + SECOND_TARGET.replace("workday", "salesforce"),
            12,
            'duplicate name "salesforce", first used by targets[0] on line 7',
        ),
        id="duplicate-names",
    ),
    pytest.param(
        Bad(
            BASE
            + SECOND_TARGET.replace(
                "application: 22222222-3333-4444-5555-666666666666",
                "service_principal: 0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0",
            ),
            13,
            'duplicate object id "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"',
        ),
        id="duplicate-object-ids-other-case",
    ),
    pytest.param(
        Bad(BASE.split("    credentials:\n")[0] + "    credentials: {}\n", 9, "must not be empty"),
        id="empty-credentials",
    ),
    pytest.param(
        Bad(edit("BaseAddress:", "Frobnicate:"), 10, '"Frobnicate" is not a synchronizationSecret'),
        id="unknown-secret-key",
    ),
    pytest.param(
        Bad(edit("SecretToken:", "SecretTokn:"), 11, 'did you mean "SecretToken"?'),
        id="misspelled-secret-key",
    ),
    pytest.param(
        Bad(edit("BaseAddress:", "baseAddress:"), 10, 'did you mean "BaseAddress"?'),
        id="wrong-case-secret-key",
    ),
    pytest.param(
        Bad(edit("salesforce.com}", f"salesforce.com, env: {SECRET_ENV}}}"), 10, "env and value"),
        id="reference-two-kinds",
    ),
    pytest.param(
        Bad(edit("{value: https://contoso.my.salesforce.com}", "{}"), 10, "needs one of env"),
        id="reference-no-kind",
    ),
    pytest.param(
        Bad(edit("{value: https://contoso.my.salesforce.com}", "plain"), 10, "must be a reference"),
        id="string-not-reference",
    ),
    pytest.param(
        Bad(
            with_token(f"{{env: {UNSET_ENV}}}"),
            11,
            f'environment variable "{UNSET_ENV}" is not set',
        ),
        id="unset-env-var",
    ),
    pytest.param(Bad(None, 1, "file not found"), id="missing-manifest-file"),
    pytest.param(
        Bad(with_token("{file: absent.txt}"), 11, "absent.txt does not exist"),
        id="missing-secret-file",
    ),
    pytest.param(
        Bad(
            with_token("{file: empty.txt}"),
            11,
            "empty.txt is empty",
            files={"empty.txt": b""},
        ),
        id="empty-secret-file",
    ),
    pytest.param(
        Bad(
            with_token("{file: latin1.txt}"),
            11,
            "latin1.txt is not UTF-8",
            files={"latin1.txt": "pässword".encode("latin-1")},
        ),
        id="secret-file-not-utf8",
    ),
    pytest.param(
        Bad(edit("salesforce\n", "sales\xe9force\n").encode("latin-1"), 7, "not UTF-8"),
        id="manifest-not-utf8",
    ),
    pytest.param(
        Bad(edit("auth:\n", "cloud: gobal\nauth:\n"), 3, 'did you mean "global"?'),
        id="cloud-typo",
    ),
    pytest.param(
        Bad(edit("auth:\n", "cloud: custom\nauth:\n"), 1, "cloud: custom needs an endpoints"),
        id="custom-cloud-without-endpoints",
    ),
    pytest.param(
        Bad(
            edit(
                "auth:\n",
                "endpoints:\n  graph: https://g.example\n  login: https://l.example\nauth:\n",
            ),
            1,
            "endpoints is only allowed with cloud: custom (cloud is global)",
        ),
        id="endpoints-without-custom-cloud",
    ),
    pytest.param(
        Bad(
            edit(
                "auth:\n",
                "cloud: custom\nendpoints:\n  graph: http://graph.contoso.com\n  login: https://login.contoso.com\nauth:\n",
            ),
            5,
            '"http://graph.contoso.com" uses plain http',
        ),
        id="plain-http-remote-graph",
    ),
    pytest.param(
        Bad(
            edit(
                "auth:\n",
                "cloud: custom\nendpoints:\n  graph: https://127.0.0.1:8443\n  login: https://127.0.0.1:8443\n  ca_bundle: absent-ca.pem\nauth:\n",
            ),
            7,
            "absent-ca.pem does not exist",
        ),
        id="missing-ca-bundle",
    ),
    pytest.param(
        Bad(
            edit("  client_secret:", "  certificate: {file: cert.pem}\n  client_secret:"),
            4,
            "found client_secret and certificate",
        ),
        id="client-secret-and-certificate",
    ),
    pytest.param(
        Bad(edit(f"  client_secret: {{env: {SECRET_ENV}}}\n", ""), 4, "found none"),
        id="no-credential",
    ),
    pytest.param(
        Bad(BASE.split("targets:\n")[0], 1, 'required key "targets" is missing'),
        id="targets-missing",
    ),
    pytest.param(
        Bad(BASE.split("targets:\n")[0] + "targets: []\n", 6, "must be a non-empty list"),
        id="targets-empty",
    ),
    pytest.param(
        Bad(edit("name: salesforce", "name: 2024-13-45"), 7, "invalid !!timestamp value"),
        id="impossible-date",
    ),
    pytest.param(
        Bad("version: 1\nnested: " + "[" * 40 + "]" * 40 + "\n", 2, "nested more than"),
        id="nested-too-deep",
    ),
]


class TestRejectedInputs:
    """Each bad input is rejected with one problem at the right line."""

    @pytest.mark.parametrize("case", BAD_INPUTS)
    def test_bad_input_rejected(
        self, case: Bad, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A bad manifest raises ManifestError with one problem, its line and its reason."""
        if case.max_bytes is not None:
            monkeypatch.setattr(batchsync.manifest, "MAX_MANIFEST_BYTES", case.max_bytes)
        for name, content in case.files.items():
            write(tmp_path, content, name)
        path = tmp_path / "manifest.yaml"
        if case.text is not None:
            write(tmp_path, case.text)

        with pytest.raises(case.error) as caught:
            load_manifest(path)

        assert isinstance(caught.value, ManifestError)
        problems = caught.value.problems
        assert len(problems) == 1, str(caught.value)
        assert problems[0].line == case.line, str(caught.value)
        assert case.fragment in problems[0].message, str(caught.value)

    @pytest.mark.timeout(5)
    def test_deep_billion_laughs_rejected(self, tmp_path: Path) -> None:
        """Thirty levels of nine aliases each fail at the first alias instead of expanding."""
        text = billion_laughs(30)

        problems = problems_of(write(tmp_path, text))

        assert "anchors and aliases" in problems[0].message

    def test_string_reference_hides_text(self, tmp_path: Path) -> None:
        """A bare string where a reference belongs is rejected without echoing the string."""
        path = write(tmp_path, with_token(SECRET))

        with pytest.raises(ManifestError) as caught:
            load_manifest(path)

        assert "must be a reference" in str(caught.value)
        assert SECRET not in str(caught.value)

    def test_wrong_type_secret_hides_text(self, tmp_path: Path) -> None:
        """A literal of the wrong type inside a reference is described by type, not shown."""
        path = write(tmp_path, with_token("{value: 98765432}"))

        with pytest.raises(ManifestError) as caught:
            load_manifest(path)

        assert "must be a string; got a number" in str(caught.value)
        assert "98765432" not in str(caught.value)

    def test_unreadable_file_rejected(self, tmp_path: Path) -> None:
        """A manifest this user may not read is rejected with the permission problem."""
        path = write(tmp_path, BASE)
        path.chmod(0)
        if os.access(path, os.R_OK):
            pytest.skip("this user reads files whatever their mode (root)")

        problems = problems_of(path)

        assert problems[0].message.startswith("permission denied")

    def test_directory_rejected(self, tmp_path: Path) -> None:
        """A directory given as the manifest is rejected with a hint to name the file."""
        problems = problems_of(tmp_path)

        assert problems[0].message == "is a directory; give the manifest file"

    def test_references_skipped_on_request(self, tmp_path: Path) -> None:
        """With check_references off, an unset variable does not stop the load."""
        text = with_token(f"{{env: {UNSET_ENV}}}")

        manifest = load_manifest(write(tmp_path, text), check_references=False)

        assert manifest.targets[0].credentials[1][1] == Reference("env", UNSET_ENV, tmp_path)


FIVE_PROBLEMS = f"""\
version: 2
tenant: contoso.onmicrosoft.com
cloud: gobal
auth:
  client_id: not-a-guid
  client_secret: {{env: {SECRET_ENV}}}
targets:
  - name: salesforce
    service_principal: 12345
    credentials:
      Frobnicate: {{value: x}}
"""


class TestProblemReport:
    """All problems come back at once, sorted, in the PATH:LINE:COL: field: message format."""

    def test_all_problems_reported(self, tmp_path: Path) -> None:
        """A manifest with five distinct errors yields five problems."""
        problems = problems_of(write(tmp_path, FIVE_PROBLEMS))

        assert len(problems) == 5

    def test_problems_sorted_by_line(self, tmp_path: Path) -> None:
        """Problems are listed in file order."""
        problems = problems_of(write(tmp_path, FIVE_PROBLEMS))

        assert [problem.line for problem in problems] == [1, 3, 5, 9, 11]

    def test_problem_fields(self, tmp_path: Path) -> None:
        """Each problem names the field it is about."""
        problems = problems_of(write(tmp_path, FIVE_PROBLEMS))

        assert [problem.field for problem in problems] == [
            "version",
            "cloud",
            "auth.client_id",
            "targets[0].service_principal",
            "targets[0].credentials.Frobnicate",
        ]

    def test_unset_variable_message(self, tmp_path: Path) -> None:
        """An unset variable is reported at its reference with the fix."""
        text = with_token(f"{{env: {UNSET_ENV}}}")
        path = write(tmp_path, text)

        problems = problems_of(path)

        assert str(problems[0]) == (
            f"{path}:11:26: targets[0].credentials.SecretToken.env: "
            f'environment variable "{UNSET_ENV}" is not set; export it or change the reference'
        )

    def test_wrong_case_key_message(self, tmp_path: Path) -> None:
        """A secret name in the wrong case is reported at the key with the right spelling."""
        path = write(tmp_path, edit("BaseAddress:", "baseAddress:"))

        problems = problems_of(path)

        assert str(problems[0]) == (
            f"{path}:10:7: targets[0].credentials.baseAddress: "
            '"baseAddress" is not a synchronizationSecret name; '
            'did you mean "BaseAddress"? Names are case-sensitive'
        )

    def test_wrong_type_message(self, tmp_path: Path) -> None:
        """A value of the wrong type is reported at the value with what was found."""
        path = write(tmp_path, BASE + "limits:\n  concurrency: eight\n")

        problems = problems_of(path)

        assert str(problems[0]) == (
            f'{path}:13:16: limits.concurrency: must be an integer; got the string "eight"'
        )

    def test_error_lists_every_problem(self, tmp_path: Path) -> None:
        """The exception text has a count line and then one line per problem."""
        with pytest.raises(ManifestError) as caught:
            load_manifest(write(tmp_path, FIVE_PROBLEMS))

        assert str(caught.value).splitlines()[0] == "invalid manifest (5 problems):"
        assert len(str(caught.value).splitlines()) == 6


class TestValidManifest:
    """A valid manifest loads with its settings, targets and references."""

    def test_targets_loaded(self, tmp_path: Path) -> None:
        """Both targets are loaded in file order with their names."""
        manifest = load_manifest(write(tmp_path, BASE + SECOND_TARGET))

        assert [target.name for target in manifest.targets] == ["salesforce", "workday"]

    def test_target_indexes(self, tmp_path: Path) -> None:
        """Each target keeps its position in the file."""
        manifest = load_manifest(write(tmp_path, BASE + SECOND_TARGET))

        assert [target.index for target in manifest.targets] == [0, 1]

    def test_target_kinds(self, tmp_path: Path) -> None:
        """service_principal and application map to Graph's object kinds."""
        manifest = load_manifest(write(tmp_path, BASE + SECOND_TARGET))

        assert [target.kind for target in manifest.targets] == ["servicePrincipal", "application"]

    def test_object_ids_lower_cased(self, tmp_path: Path) -> None:
        """Object ids are stored in lower case whatever case the file uses."""
        manifest = load_manifest(write(tmp_path, BASE))

        assert manifest.targets[0].object_id == "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"

    def test_tenant_lower_cased(self, tmp_path: Path) -> None:
        """A tenant domain is stored in lower case."""
        manifest = load_manifest(write(tmp_path, BASE))

        assert manifest.tenant == "contoso.onmicrosoft.com"

    def test_credentials_in_file_order(self, tmp_path: Path) -> None:
        """Credentials keep their names, kinds and targets, in file order."""
        manifest = load_manifest(write(tmp_path, BASE))

        assert manifest.targets[0].credentials == (
            ("BaseAddress", Reference("value", "https://contoso.my.salesforce.com", tmp_path)),
            ("SecretToken", Reference("env", SECRET_ENV, tmp_path)),
        )

    def test_auth_settings(self, tmp_path: Path) -> None:
        """The client id and the client secret reference are loaded, and no certificate is set."""
        manifest = load_manifest(write(tmp_path, BASE))

        assert manifest.auth.client_id == "11111111-2222-3333-4444-555555555555"
        assert manifest.auth.client_secret == Reference("env", SECRET_ENV, tmp_path)
        assert manifest.auth.certificate is None

    def test_default_limits(self, tmp_path: Path) -> None:
        """Limits not given in the file take their defaults."""
        manifest = load_manifest(write(tmp_path, BASE))

        assert manifest.limits.concurrency == 8
        assert manifest.limits.max_attempts == 6

    def test_limits_override(self, tmp_path: Path) -> None:
        """Limits given in the file replace the defaults, and an integer rate is accepted."""
        text = BASE + "limits:\n  concurrency: 3\n  requests_per_second: 5\n"

        manifest = load_manifest(write(tmp_path, text))

        assert manifest.limits.concurrency == 3
        assert manifest.limits.requests_per_second == 5.0

    def test_sha256_of_file(self, tmp_path: Path) -> None:
        """The manifest records the SHA-256 of the bytes it was read from."""
        manifest = load_manifest(write(tmp_path, BASE))

        assert manifest.sha256 == hashlib.sha256(BASE.encode()).hexdigest()

    def test_byte_order_mark_accepted(self, tmp_path: Path) -> None:
        """A UTF-8 byte order mark, as some Windows editors write, is ignored."""
        manifest = load_manifest(write(tmp_path, b"\xef\xbb\xbf" + BASE.encode()))

        assert manifest.targets[0].name == "salesforce"

    def test_relative_file_reference(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """A relative file reference resolves against the manifest's folder, not the cwd."""
        folder = tmp_path / "tenant-a"
        folder.mkdir()
        write(folder, b"from-the-manifest-folder\n", "token.txt")
        (tmp_path / "token.txt").write_text("from-the-working-directory\n", encoding="utf-8")
        monkeypatch.chdir(tmp_path)
        text = with_token("{file: token.txt}")

        manifest = load_manifest(write(folder, text))

        reference = manifest.targets[0].credentials[1][1]
        assert reference.path == folder / "token.txt"
        assert resolve(reference).reveal() == "from-the-manifest-folder"

    def test_loopback_http_accepted(self, tmp_path: Path) -> None:
        """Plain http is accepted for a loopback Graph, as the emulator uses."""
        text = edit(
            "auth:\n",
            "cloud: custom\nendpoints:\n  graph: http://127.0.0.1:8443/\n"
            "  login: http://localhost:8444\nauth:\n",
        )

        manifest = load_manifest(write(tmp_path, text))

        assert manifest.endpoints.graph == "http://127.0.0.1:8443"
        assert manifest.endpoints.login == "http://localhost:8444"

    def test_custom_ca_bundle_relative(self, tmp_path: Path) -> None:
        """A relative ca_bundle is stored as a path in the manifest's folder."""
        write(tmp_path, b"-----BEGIN CERTIFICATE-----\n", "ca.pem")
        text = edit(
            "auth:\n",
            "cloud: custom\nendpoints:\n  graph: https://127.0.0.1:8443\n"
            "  login: https://127.0.0.1:8443\n  ca_bundle: ca.pem\nauth:\n",
        )

        manifest = load_manifest(write(tmp_path, text))

        assert manifest.endpoints.ca_bundle == str(tmp_path / "ca.pem")

    @pytest.mark.parametrize(
        ("cloud", "graph", "login", "scope"),
        [
            pytest.param(
                "global",
                "https://graph.microsoft.com",
                "https://login.microsoftonline.com",
                "https://graph.microsoft.com/.default",
                id="global",
            ),
            pytest.param(
                "usgov",
                "https://graph.microsoft.us",
                "https://login.microsoftonline.us",
                "https://graph.microsoft.us/.default",
                id="usgov",
            ),
            pytest.param(
                "usgov-dod",
                "https://dod-graph.microsoft.us",
                "https://login.microsoftonline.us",
                "https://dod-graph.microsoft.us/.default",
                id="usgov-dod",
            ),
            pytest.param(
                "china",
                "https://microsoftgraph.chinacloudapi.cn",
                "https://login.chinacloudapi.cn",
                "https://microsoftgraph.chinacloudapi.cn/.default",
                id="china",
            ),
        ],
    )
    def test_cloud_endpoints(
        self, cloud: str, graph: str, login: str, scope: str, tmp_path: Path
    ) -> None:
        """Each national cloud gets its own Graph host, login host and token scope."""
        manifest = load_manifest(write(tmp_path, edit("auth:\n", f"cloud: {cloud}\nauth:\n")))

        assert manifest.cloud == cloud
        assert manifest.endpoints.graph == graph
        assert manifest.endpoints.login == login
        assert manifest.endpoints.scope == scope
        assert manifest.endpoints.ca_bundle is None

    def test_default_cloud_global(self, tmp_path: Path) -> None:
        """Without a cloud key the manifest targets the global cloud."""
        manifest = load_manifest(write(tmp_path, BASE))

        assert manifest.cloud == "global"


class TestWarnings:
    """Risky but valid manifests load with warnings."""

    def test_literal_secret_warned(self, tmp_path: Path) -> None:
        """A {value:} literal on a secret key such as ClientSecret is a warning, not an error."""
        path = write(tmp_path, BASE + "      ClientSecret: {value: literal-in-the-file}\n")

        manifest = load_manifest(path)

        assert [str(warning) for warning in manifest.warnings] == [
            f"{path}:12:21: targets[0].credentials.ClientSecret: ClientSecret is a literal "
            "in the manifest; keep secrets in an env or file reference"
        ]

    def test_literal_non_secret_silent(self, tmp_path: Path) -> None:
        """A {value:} literal on a non-secret key such as BaseAddress is not warned about."""
        manifest = load_manifest(write(tmp_path, BASE))

        assert manifest.warnings == []

    def test_group_readable_file_warned(self, tmp_path: Path) -> None:
        """A secret file that the group may read is a warning naming the file."""
        secret_file = write(tmp_path, b"file-secret\n", "token.txt")
        secret_file.chmod(0o640)
        text = with_token("{file: token.txt}")

        manifest = load_manifest(write(tmp_path, text))

        assert len(manifest.warnings) == 1
        assert manifest.warnings[0].line == 11
        assert manifest.warnings[0].message == (
            f"file {secret_file} is readable by other users; chmod 600 it"
        )

    def test_owner_only_file_silent(self, tmp_path: Path) -> None:
        """A secret file only its owner may read loads without a warning."""
        write(tmp_path, b"file-secret\n", "token.txt").chmod(0o600)
        text = with_token("{file: token.txt}")

        manifest = load_manifest(write(tmp_path, text))

        assert manifest.warnings == []


class TestLargeManifest:
    """A manifest at the scale batchsync is built for validates."""

    @pytest.mark.slow
    def test_hundred_thousand_targets(self, tmp_path: Path) -> None:
        """A manifest of 100,000 targets loads every target."""
        targets = "".join(
            f"  - name: app-{number}\n"
            f"    service_principal: 00000000-0000-0000-0000-{number:012d}\n"
            "    credentials:\n"
            f"      SecretToken: {{env: {SECRET_ENV}}}\n"
            for number in range(100_000)
        )
        path = write(tmp_path, BASE.split("targets:\n")[0] + "targets:\n" + targets)

        manifest = load_manifest(path)

        assert len(manifest.targets) == 100_000
        assert manifest.targets[-1].object_id == "00000000-0000-0000-0000-000000099999"


class TestReferencesBesideSchemaErrors:
    """References are checked in targets that have other problems too."""

    def test_unset_variable_reported_with_key_error(self, tmp_path, monkeypatch):
        """A wrong-case key and an unset variable in one target are both reported."""
        monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)
        path = tmp_path / "manifest.yaml"
        path.write_text(
            "version: 1\n"
            "tenant: contoso.onmicrosoft.com\n"
            "auth:\n"
            "  client_id: 5f7e3a1c-0d2b-4c59-9a57-8f0f1b2c3d4e\n"
            "  client_secret: {value: x}\n"
            "targets:\n"
            "  - name: a\n"
            "    service_principal: 0b7e0000-0000-0000-0000-000000000001\n"
            "    credentials:\n"
            "      baseAddress: {value: https://x.example}\n"
            "      SecretToken: {env: NOT_SET_ANYWHERE}\n",
            encoding="utf-8",
        )

        with pytest.raises(ManifestError) as caught:
            load_manifest(path)
        fields = [problem.field for problem in caught.value.problems]

        assert fields == [
            "targets[0].credentials.baseAddress",
            "targets[0].credentials.SecretToken.env",
        ]
