"""The invoice as a PDF (fpdf2, pure Python), with DejaVu Sans so any business name renders.

The font ships with the package (``fonts/DejaVuSans.ttf``, Bitstream Vera license in
``fonts/LICENSE-DejaVu.txt``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from importlib import resources

from fpdf import FPDF

from tresen.relay.billing.invoice import PRICING_NAMES, money
from tresen.relay.billing.models import Invoice

COLUMNS = (("Category", 34), ("Pricing", 62), ("Country", 20), ("Messages", 28), ("Amount", 36))


def invoice_pdf(invoice: Invoice) -> bytes:
    pdf = FPDF(format="A4")
    pdf.set_title(f"Invoice {invoice.month}")
    pdf.set_creator("tresen relay")
    with resources.as_file(
        resources.files("tresen.relay.billing").joinpath("fonts/DejaVuSans.ttf")
    ) as font:
        pdf.add_font("DejaVu", "", str(font))
    pdf.add_page()
    pdf.set_font("DejaVu", size=18)
    pdf.cell(0, 10, f"Invoice {invoice.month}", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("DejaVu", size=10)
    issued = datetime.fromtimestamp(invoice.issued_at / 1000, UTC).strftime("%Y-%m-%d")
    name = invoice.business_name or f"business {invoice.business}"
    pdf.multi_cell(
        0,
        5,
        f"{name} (account {invoice.business})\nIssued {issued} · currency {invoice.currency}",
        new_x="LMARGIN",
        new_y="NEXT",
    )
    pdf.ln(4)
    pdf.multi_cell(
        0,
        5,
        "Every business message delivered in the month, by category, pricing and the "
        "recipient's country. Messages in a customer-service or entry-point window are free.",
        new_x="LMARGIN",
        new_y="NEXT",
    )
    pdf.ln(4)
    for title, width in COLUMNS:
        pdf.cell(width, 7, title, border="B", align="R" if width in (28, 36) else "L")
    pdf.ln()
    for line in invoice.lines:
        cells = (
            line.category.title(),
            PRICING_NAMES.get(line.pricing_type, line.pricing_type),
            line.country,
            f"{line.messages:,}",
            money(line.amount_minor, invoice.currency),
        )
        for (_, width), text in zip(COLUMNS, cells, strict=True):
            pdf.cell(width, 6, text, align="R" if width in (28, 36) else "L")
        pdf.ln()
    if not invoice.lines:
        pdf.cell(0, 6, "No delivered business messages this month.", new_x="LMARGIN", new_y="NEXT")
    total = f"Total ({invoice.billable_messages:,} billable)"
    pdf.cell(116, 7, total, border="T")
    pdf.cell(28, 7, f"{invoice.messages:,}", border="T", align="R")
    pdf.cell(36, 7, money(invoice.amount_minor, invoice.currency), border="T", align="R")
    pdf.ln(10)
    if invoice.payments:
        pdf.set_font("DejaVu", size=12)
        pdf.cell(0, 8, "Payments and adjustments", new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("DejaVu", size=10)
        for p in invoice.payments:
            day = datetime.fromtimestamp(p.at / 1000, UTC).strftime("%Y-%m-%d")
            pdf.cell(30, 6, day)
            pdf.cell(30, 6, p.kind)
            pdf.cell(84, 6, p.note[:60])
            pdf.cell(36, 6, money(p.amount_minor, invoice.currency), align="R")
            pdf.ln()
        pdf.ln(4)
    pdf.cell(0, 6, f"Balance now: {money(invoice.balance_minor, invoice.currency)}")
    return bytes(pdf.output())


__all__ = ["invoice_pdf"]
