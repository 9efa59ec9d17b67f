"""Invoice documents: CSV for machines, a self-contained printable HTML page for people."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from html import escape

from tresen.relay.billing.models import Invoice

PRICING_NAMES = {
    "regular": "billable",
    "free_customer_service": "free (customer-service window)",
    "free_entry_point": "free (entry point)",
}


def money(amount: int, currency: str) -> str:
    sign = "-" if amount < 0 else ""
    return f"{sign}{abs(amount) // 100}.{abs(amount) % 100:02d} {currency}"


def invoice_csv(invoice: Invoice) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(
        [
            "business",
            "month",
            "category",
            "pricing_type",
            "country",
            "messages",
            "amount_minor",
            "currency",
        ]
    )
    for line in invoice.lines:
        writer.writerow(
            [
                invoice.business,
                invoice.month,
                line.category,
                line.pricing_type,
                line.country,
                line.messages,
                line.amount_minor,
                invoice.currency,
            ]
        )
    writer.writerow(
        [
            invoice.business,
            invoice.month,
            "TOTAL",
            "",
            "",
            invoice.messages,
            invoice.amount_minor,
            invoice.currency,
        ]
    )
    return out.getvalue()


def invoice_html(invoice: Invoice) -> str:
    issued = datetime.fromtimestamp(invoice.issued_at / 1000, UTC).strftime("%Y-%m-%d")
    rows = (
        "".join(
            "<tr>"
            f"<td>{escape(line.category.title())}</td>"
            f"<td>{escape(PRICING_NAMES.get(line.pricing_type, line.pricing_type))}</td>"
            f"<td>{escape(line.country)}</td>"
            f"<td class=n>{line.messages:,}</td>"
            f"<td class=n>{escape(money(line.amount_minor, invoice.currency))}</td>"
            "</tr>"
            for line in invoice.lines
        )
        or "<tr><td colspan=5>No delivered business messages this month.</td></tr>"
    )
    payments = "".join(
        f"<tr><td>{datetime.fromtimestamp(p.at / 1000, UTC):%Y-%m-%d}</td>"
        f"<td>{escape(p.kind)}</td><td>{escape(p.note)}</td>"
        f"<td class=n>{escape(money(p.amount_minor, invoice.currency))}</td></tr>"
        for p in invoice.payments
    )
    name = escape(invoice.business_name or f"business {invoice.business}")
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>Invoice {escape(invoice.month)} - {name}</title><style>"
        "body{font:14px/1.4 system-ui,sans-serif;max-width:48rem;margin:2rem auto;color:#111}"
        "table{border-collapse:collapse;width:100%;margin:1rem 0}"
        "th,td{border-bottom:1px solid #ddd;padding:.35rem .5rem;text-align:left}"
        ".n{text-align:right;font-variant-numeric:tabular-nums}"
        "tfoot td{font-weight:600;border-top:2px solid #111}"
        "@media print{body{margin:0}}</style></head><body>"
        f"<h1>Invoice {escape(invoice.month)}</h1>"
        f"<p><strong>{name}</strong> (account {invoice.business})<br>"
        f"Issued {issued} · currency {escape(invoice.currency)}</p>"
        "<p>Every business message delivered in the month, by category, pricing and the "
        "recipient's country. Messages in a customer-service or entry-point window are free.</p>"
        "<table><thead><tr><th>Category</th><th>Pricing</th><th>Country</th>"
        "<th class=n>Messages</th><th class=n>Amount</th></tr></thead>"
        f"<tbody>{rows}</tbody><tfoot><tr><td colspan=3>Total "
        f"({invoice.billable_messages:,} billable)</td><td class=n>{invoice.messages:,}</td>"
        f"<td class=n>{escape(money(invoice.amount_minor, invoice.currency))}</td></tr></tfoot>"
        "</table>"
        + (
            "<h2>Payments and adjustments</h2><table><thead><tr><th>Date</th><th>Kind</th>"
            f"<th>Note</th><th class=n>Amount</th></tr></thead><tbody>{payments}</tbody></table>"
            if payments
            else ""
        )
        + f"<p>Balance now: <strong>{escape(money(invoice.balance_minor, invoice.currency))}"
        "</strong></p></body></html>"
    )


__all__ = ["invoice_csv", "invoice_html", "money"]
