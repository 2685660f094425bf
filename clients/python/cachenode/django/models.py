"""What ``model_subscription.models`` gave the library: SubscriptionModelMixin
and SubscriptionQuerySet. This app defines no table of its own (the
created-cache records live on the cluster), so it needs no migration."""

import contextvars

from django.db import models, transaction

from .contrib import automatic

CHUNK = 500

# Set while a bulk operation runs the ones it is made of (bulk_update runs
# update() per batch): those record nothing, the outer one records the rows.
_inner = contextvars.ContextVar("cachenode_inner_bulk", default=False)


class SubscriptionModelMixin(models.Model):
    """Kept so that models keep their bases. The signals are connected by
    ``automatic.register`` for any model; the old values of a save are read
    from the database by pre_save (one query), which is right even for an
    instance loaded long before."""

    class Meta:
        abstract = True


def _chunks(seq, n=CHUNK):
    for i in range(0, len(seq), n):
        yield seq[i:i + n]


class SubscriptionQuerySet(models.QuerySet):
    """A QuerySet whose bulk operations send one change event with every
    changed row (the library's silently sent none): ``update()``,
    ``bulk_create()``, ``bulk_update()`` and ``delete()``. Use it as the
    model's manager: ``objects = SubscriptionQuerySet.as_manager()``."""

    def _rows(self, pks):
        base = self.model._base_manager.using(self.db)
        out = {}
        for chunk in _chunks(list(pks)):
            for o in base.filter(pk__in=chunk):
                out[o.pk] = o
        return out

    def update(self, **kwargs):
        if _inner.get() or not automatic.is_registered(self.model):
            return super().update(**kwargs)
        with automatic.batch() as b:
            with transaction.atomic(using=self.db, savepoint=False):
                before = list(self.all())
                n = super().update(**kwargs)
                after = self._rows(o.pk for o in before)
            for o in before:
                new = after.get(o.pk)
                if new is None:
                    continue
                old_v, new_v = automatic.values_of(o), automatic.values_of(new)
                if old_v != new_v:
                    b.add(self.model, automatic.Change("update", new, old_v, new_v), self.db)
        return n

    update.alters_data = True

    def bulk_create(self, objs, *args, **kwargs):
        if _inner.get() or not automatic.is_registered(self.model):
            return super().bulk_create(objs, *args, **kwargs)
        with automatic.batch() as b:
            created = super().bulk_create(objs, *args, **kwargs)
            for o in created:
                b.add(self.model, automatic.Change("create", o, None, automatic.values_of(o)), self.db)
        return created

    bulk_create.alters_data = True

    def bulk_update(self, objs, fields, *args, **kwargs):
        if _inner.get() or not automatic.is_registered(self.model):
            return super().bulk_update(objs, fields, *args, **kwargs)
        objs = list(objs)
        with automatic.batch() as b:
            with transaction.atomic(using=self.db, savepoint=False):
                before = self._rows(o.pk for o in objs)
                token = _inner.set(True)
                try:
                    n = super().bulk_update(objs, fields, *args, **kwargs)
                finally:
                    _inner.reset(token)
            for o in objs:
                old = before.get(o.pk)
                if old is None:
                    continue
                old_v, new_v = automatic.values_of(old), automatic.values_of(o)
                if old_v != new_v:
                    b.add(self.model, automatic.Change("update", o, old_v, new_v), self.db)
        return n

    bulk_update.alters_data = True

    def delete(self):
        # Django sends post_delete for every row when a receiver is
        # connected (it is, for a registered model): inside the batch they
        # make one event.
        with automatic.batch():
            return super().delete()

    delete.alters_data = True
    delete.queryset_only = True
