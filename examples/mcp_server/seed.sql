-- The example server's database, created fresh from this script at start (no binary in git).
CREATE TABLE customers (
  id INTEGER PRIMARY KEY,
  tenant TEXT NOT NULL,
  name TEXT NOT NULL,
  email TEXT NOT NULL,
  plan TEXT NOT NULL
);
INSERT INTO customers (id, tenant, name, email, plan) VALUES
  (1, 'acme', 'Road Runner Logistics', 'ops@roadrunner.example', 'enterprise'),
  (2, 'acme', 'Coyote Engineering', 'wile@coyote.example', 'starter'),
  (3, 'globex', 'Hank Scorpio Holdings', 'hank@globex.example', 'enterprise');

CREATE TABLE invoices (
  id TEXT PRIMARY KEY,
  tenant TEXT NOT NULL,
  customer_id INTEGER NOT NULL REFERENCES customers(id),
  amount REAL NOT NULL,
  status TEXT NOT NULL
);
INSERT INTO invoices (id, tenant, customer_id, amount, status) VALUES
  ('INV-1001', 'acme', 1, 420.00, 'open'),
  ('INV-1002', 'acme', 2, 2500.00, 'open'),
  ('INV-2001', 'globex', 3, 99.00, 'paid');
