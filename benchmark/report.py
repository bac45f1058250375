"""`python -m benchmark.report`: a shim the required command forces; the logic is in reports/."""
from __future__ import annotations


def main(argv: list[str] | None = None) -> int:
    from reports.cli import main as reports_main  # the one allowed back-edge (architecture §1)

    return reports_main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
