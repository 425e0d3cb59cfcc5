// SPDX-License-Identifier: GPL-2.0
/*
 * Partita partitions as remote processors.
 *
 * Partita's generated device tree lists, under /hypervisor
 * ("partita,hypervisor", which this driver binds), one "partita,partition"
 * node per partition this Linux domain may control: reg = its id, label =
 * its name, interrupts = the control interrupt raised at each of its state
 * changes. This driver registers one remoteproc per such node, named by
 * the label, with firmware "<label>.elf", and drives it through the
 * hypervisor's control calls (SMCCC vendor hypervisor service, HVC):
 * STATUS, START, STOP and LOAD.
 *
 * The hypervisor loads the firmware ELF itself (LOAD checks every segment
 * against the target's memory), so ->load hands it a physically contiguous
 * copy of the file and remoteproc's ELF loader never writes the target's
 * memory. A partition already running at boot is attached; a crash
 * (STATUS says Crashed after the control interrupt) is reported with
 * rproc_report_crash(), so remoteproc's recovery restarts it; a partition
 * that powers itself off is shut down as `echo stop` would, so sysfs
 * says offline and its channels go.
 *
 * A partition node with "partita,rpmsg-vdev" has its rpmsg link reach
 * Linux as this remoteproc's virtio device: the driver gives remoteproc a
 * resource table with one rpmsg vdev, remoteproc allocates its vrings in
 * our memory, VDEV_READY hands them to the hypervisor before the partition
 * starts (or is attached), KICK notifies, VDEV_RESET takes them back
 * before its vdev stops. The hypervisor raises the control interrupt when it
 * has used buffers; its handler is threaded, so virtio_rpmsg_bus and
 * rpmsg_ns create announced channels in process context.
 */

#include <linux/arm-smccc.h>
#include <linux/delay.h>
#include <linux/devm-helpers.h>
#include <linux/dma-map-ops.h>
#include <linux/elf.h>
#include <linux/firmware.h>
#include <linux/interrupt.h>
#include <linux/jiffies.h>
#include <linux/module.h>
#include <linux/of.h>
#include <linux/of_irq.h>
#include <linux/platform_device.h>
#include <linux/reboot.h>
#include <linux/remoteproc.h>
#include <linux/slab.h>
#include <linux/virtio_ids.h>

/* rproc_vq_interrupt(), which every remoteproc driver calls. */
#include "remoteproc_internal.h"

#define PARTITA_STATUS	0xc6000010
#define PARTITA_START	0xc6000011
#define PARTITA_STOP	0xc6000012
#define PARTITA_LOAD	0xc6000013
#define PARTITA_VDEV_READY	0xc6000014
#define PARTITA_VDEV_RESET	0xc6000015
#define PARTITA_KICK	0xc6000016

/*
 * 256 descriptors a vring: virtio_rpmsg_bus then keeps 256 receive and 256
 * transmit buffers of 512 bytes, its most. Used rings page-aligned.
 */
#define PARTITA_VRING_NUM	256
#define PARTITA_VRING_ALIGN	4096
#define VIRTIO_RPMSG_F_NS	0

/*
 * The resource table remoteproc is given: one rpmsg vdev with two vrings
 * (struct resource_table, fw_rsc_hdr and fw_rsc_vdev spelled out, as
 * they end in flexible arrays).
 */
struct partita_rsc_table {
	u32 ver;
	u32 num;
	u32 reserved[2];
	u32 offset[1];
	u32 type;
	u32 id;
	u32 notifyid;
	u32 dfeatures;
	u32 gfeatures;
	u32 config_len;
	u8 status;
	u8 num_of_vrings;
	u8 vdev_reserved[2];
	struct fw_rsc_vdev_vring vring[2];
} __packed;

static const struct partita_rsc_table partita_rsc_template = {
	.ver = 1,
	.num = 1,
	.offset = { offsetof(struct partita_rsc_table, type) },
	.type = RSC_VDEV,
	.id = VIRTIO_ID_RPMSG,
	.dfeatures = BIT(VIRTIO_RPMSG_F_NS),
	.num_of_vrings = 2,
	.vring = {
		{ .da = FW_RSC_ADDR_ANY, .align = PARTITA_VRING_ALIGN,
		  .num = PARTITA_VRING_NUM },
		{ .da = FW_RSC_ADDR_ANY, .align = PARTITA_VRING_ALIGN,
		  .num = PARTITA_VRING_NUM },
	},
};

enum partita_state {
	PARTITA_STOPPED = 0,
	PARTITA_LOADING = 1,
	PARTITA_RUNNING = 2,
	PARTITA_STOPPING = 3,
	PARTITA_CRASHED = 4,
};

/* How long a START or STOP may take to reach its state. */
#define PARTITA_SETTLE_MS	5000

struct partita_rproc {
	struct rproc *rproc;
	u32 id;
	/* The link to it is this remoteproc's virtio device. */
	bool vdev;
	/* The table of an attached partition (a booted one's is remoteproc's copy). */
	struct partita_rsc_table table;
	/* Shuts remoteproc down after the partition powered itself off. */
	struct work_struct ended;
	/* The system powers off or reboots: `ended` is not scheduled again. */
	bool closing;
	struct notifier_block reboot;
	/* Stops the hypervisor's use of the vrings before the vdev goes. */
	struct rproc_subdev subdev;
	bool subdev_added;
};

static const char *const partita_errors[] = {
	"", "not supported", "unknown partition", "no right", "wrong state",
	"image outside the caller's memory", "image refused",
	"no such virtio device, or invalid vrings",
};

/* A control call's result as an errno, logged with its meaning. */
static int partita_errno(struct rproc *rproc, const char *call, long ret)
{
	int err;

	if (ret >= 0)
		return 0;
	switch (ret) {
	case -2:
		err = -ENODEV;
		break;
	case -3:
		err = -EPERM;
		break;
	case -4:
		err = -EBUSY;
		break;
	case -5:
		err = -EFAULT;
		break;
	case -6:
	case -7:
		err = -EINVAL;
		break;
	default:
		err = -EOPNOTSUPP;
		break;
	}
	dev_err(&rproc->dev, "%s of %s refused: %ld (%s)\n", call, rproc->name,
		ret, -ret < ARRAY_SIZE(partita_errors) ? partita_errors[-ret] : "?");
	return err;
}

/*
 * STATUS returns counters in x1..x7, so the call goes through the SMCCC 1.2
 * helper, which treats x0..x17 as results: the 1.1 macros assume x4..x17
 * survive.
 */
static long partita_call(unsigned long fn, u32 id, unsigned long a2,
			 unsigned long a3)
{
	struct arm_smccc_1_2_regs args = {
		.a0 = fn, .a1 = id, .a2 = a2, .a3 = a3,
	};
	struct arm_smccc_1_2_regs res;

	arm_smccc_1_2_hvc(&args, &res);
	return (long)res.a0;
}

static long partita_status(struct partita_rproc *p)
{
	return partita_call(PARTITA_STATUS, p->id, 0, 0);
}

/* Waits until the partition is in @want (or, if crashed, reports it). */
static int partita_settle(struct partita_rproc *p, long want)
{
	unsigned long end = jiffies + msecs_to_jiffies(PARTITA_SETTLE_MS);
	long s;

	do {
		s = partita_status(p);
		if (s == want)
			return 0;
		if (s < 0)
			return partita_errno(p->rproc, "STATUS", s);
		if (s == PARTITA_CRASHED && want != PARTITA_CRASHED) {
			dev_err(&p->rproc->dev, "%s crashed\n", p->rproc->name);
			return -EIO;
		}
		usleep_range(1000, 2000);
	} while (time_before(jiffies, end));
	dev_err(&p->rproc->dev, "%s stays in state %ld, not %ld\n",
		p->rproc->name, s, want);
	return -ETIMEDOUT;
}

/* The DMA address of the carveout remoteproc allocated under @name. */
/* The carveout remoteproc allocated under @name, or NULL. */
static struct rproc_mem_entry *partita_carveout(struct rproc *rproc,
						const char *name)
{
	struct rproc_mem_entry *mem;

	list_for_each_entry(mem, &rproc->carveouts, node)
		if (!strcmp(mem->name, name) && mem->va)
			return mem;
	return NULL;
}

/*
 * Our subdevice stops first (subdevices stop in reverse order, and it is
 * added after the vdev's): the hypervisor lets go of the vrings and of
 * the buffers they point to before virtio_rpmsg_bus frees them.
 */
static void partita_subdev_stop(struct rproc_subdev *subdev, bool crashed)
{
	struct partita_rproc *p = container_of(subdev, struct partita_rproc,
					       subdev);

	partita_errno(p->rproc, "VDEV_RESET",
		      partita_call(PARTITA_VDEV_RESET, p->id, 0, 0));
}

/*
 * Hands the vrings remoteproc allocated (before ->start and ->attach) to
 * the hypervisor, which may use them from now on: the remote may send
 * before our virtio device probes, and its messages wait for buffers.
 * They are zeroed first: a recovery starts again on the same carveouts,
 * and the hypervisor must not follow the last session's indices and
 * descriptors before the vdev zeroes them itself.
 */
static int partita_vdev_ready(struct rproc *rproc)
{
	struct partita_rproc *p = rproc->priv;
	struct rproc_mem_entry *ring[2] = {
		partita_carveout(rproc, "vdev0vring0"),
		partita_carveout(rproc, "vdev0vring1"),
	};
	struct arm_smccc_1_2_regs args = {
		.a0 = PARTITA_VDEV_READY, .a1 = p->id,
		.a4 = PARTITA_VRING_NUM, .a5 = PARTITA_VRING_ALIGN,
	};
	struct arm_smccc_1_2_regs res;
	struct rproc_vdev *rvdev;
	int ret;

	if (!p->vdev)
		return 0;
	if (!ring[0] || !ring[1]) {
		dev_err(&rproc->dev, "%s: no vrings allocated\n", rproc->name);
		return -ENOMEM;
	}
	memset(ring[0]->va, 0, ring[0]->len);
	memset(ring[1]->va, 0, ring[1]->len);
	args.a2 = ring[0]->dma;
	args.a3 = ring[1]->dma;
	/*
	 * virtio_rpmsg_bus allocates its buffers on the rproc-virtio device,
	 * which remoteproc gives its parent's DMA ops but not its coherence;
	 * the hypervisor copies through cacheable mappings, as our device
	 * tree's dma-coherent says.
	 */
	list_for_each_entry(rvdev, &rproc->rvdevs, node)
		rvdev->pdev->dev.dma_coherent =
			dev_is_dma_coherent(rproc->dev.parent);
	arm_smccc_1_2_hvc(&args, &res);
	ret = partita_errno(rproc, "VDEV_READY", (long)res.a0);
	if (!ret && !p->subdev_added) {
		rproc_add_subdev(rproc, &p->subdev);
		p->subdev_added = true;
	}
	return ret;
}

/* The same as our subdevice's stop, for a start or attach that failed. */
static void partita_vdev_reset(struct rproc *rproc)
{
	struct partita_rproc *p = rproc->priv;

	if (!p->subdev_added)
		return;
	partita_subdev_stop(&p->subdev, false);
	rproc_remove_subdev(rproc, &p->subdev);
	p->subdev_added = false;
}

static int partita_rproc_start(struct rproc *rproc)
{
	struct partita_rproc *p = rproc->priv;
	int ret;

	ret = partita_vdev_ready(rproc);
	if (ret)
		return ret;
	ret = partita_errno(rproc, "START",
			    partita_call(PARTITA_START, p->id, 0, 0));
	if (!ret)
		ret = partita_settle(p, PARTITA_RUNNING);
	if (ret)
		partita_vdev_reset(rproc);
	return ret;
}

static int partita_rproc_stop(struct rproc *rproc)
{
	struct partita_rproc *p = rproc->priv;
	long s;

	partita_vdev_reset(rproc);
	s = partita_status(p);

	/* It may have stopped by itself (a power-off) or be Crashed. */
	if (s == PARTITA_STOPPED)
		return 0;
	if (s != PARTITA_STOPPING) {
		int ret = partita_errno(rproc, "STOP",
					partita_call(PARTITA_STOP, p->id, 0, 0));
		if (ret)
			return ret;
	}
	return partita_settle(p, PARTITA_STOPPED);
}

/* The partition was running before Linux: its link comes up now. */
static int partita_rproc_attach(struct rproc *rproc)
{
	struct partita_rproc *p = rproc->priv;

	if (partita_status(p) != PARTITA_RUNNING)
		return -ENODEV;
	return partita_vdev_ready(rproc);
}

static void partita_rproc_kick(struct rproc *rproc, int vqid)
{
	struct partita_rproc *p = rproc->priv;
	struct rproc_vdev *rvdev;
	int i;

	list_for_each_entry(rvdev, &rproc->rvdevs, node)
		for (i = 0; i < ARRAY_SIZE(rvdev->vring); i++)
			if (rvdev->vring[i].notifyid == vqid)
				partita_errno(rproc, "KICK",
					      partita_call(PARTITA_KICK, p->id,
							   i, 0));
}

/* Our own table, for firmware remoteproc boots (its ELF carries none). */
static int partita_rproc_parse_fw(struct rproc *rproc,
				  const struct firmware *fw)
{
	struct partita_rproc *p = rproc->priv;

	if (!p->vdev)
		return 0;
	rproc->cached_table = kmemdup(&partita_rsc_template,
				      sizeof(partita_rsc_template), GFP_KERNEL);
	if (!rproc->cached_table)
		return -ENOMEM;
	rproc->table_ptr = rproc->cached_table;
	rproc->table_sz = sizeof(partita_rsc_template);
	return 0;
}

/* The same for a partition remoteproc attaches to. */
static struct resource_table *
partita_rproc_get_loaded_rsc_table(struct rproc *rproc, size_t *size)
{
	struct partita_rproc *p = rproc->priv;

	if (!p->vdev)
		return NULL;
	p->table = partita_rsc_template;
	*size = sizeof(p->table);
	return (struct resource_table *)&p->table;
}

/*
 * The hypervisor parses and checks the ELF (every segment against the
 * target's memory); here only what makes it one of ours: a whole 64-bit
 * little-endian AArch64 header and program headers inside the file.
 */
static int partita_rproc_sanity_check(struct rproc *rproc,
				      const struct firmware *fw)
{
	const struct elf64_hdr *ehdr = (const void *)fw->data;

	if (fw->size < sizeof(*ehdr) ||
	    memcmp(ehdr->e_ident, ELFMAG, SELFMAG) ||
	    ehdr->e_ident[EI_CLASS] != ELFCLASS64 ||
	    ehdr->e_ident[EI_DATA] != ELFDATA2LSB ||
	    ehdr->e_machine != EM_AARCH64) {
		dev_err(&rproc->dev, "%s is not a 64-bit AArch64 ELF\n",
			rproc->firmware);
		return -EINVAL;
	}
	if (!ehdr->e_phnum || ehdr->e_phentsize != sizeof(struct elf64_phdr) ||
	    ehdr->e_phoff > fw->size ||
	    fw->size - ehdr->e_phoff <
	    (size_t)ehdr->e_phnum * sizeof(struct elf64_phdr)) {
		dev_err(&rproc->dev, "%s is truncated or has no program headers\n",
			rproc->firmware);
		return -EINVAL;
	}
	return 0;
}

/* LOAD wants the ELF in one physically contiguous piece of our memory. */
static int partita_rproc_load(struct rproc *rproc, const struct firmware *fw)
{
	struct partita_rproc *p = rproc->priv;
	void *copy;
	int ret;

	copy = alloc_pages_exact(fw->size, GFP_KERNEL);
	if (!copy) {
		dev_err(&rproc->dev, "no %zu contiguous bytes for %s\n",
			fw->size, rproc->firmware);
		return -ENOMEM;
	}
	memcpy(copy, fw->data, fw->size);
	ret = partita_errno(rproc, "LOAD",
			    partita_call(PARTITA_LOAD, p->id,
					 virt_to_phys(copy), fw->size));
	free_pages_exact(copy, fw->size);
	if (!ret)
		dev_info(&rproc->dev, "loaded %s (%zu bytes) into %s\n",
			 rproc->firmware, fw->size, rproc->name);
	return ret;
}

static const struct rproc_ops partita_rproc_ops = {
	.start = partita_rproc_start,
	.stop = partita_rproc_stop,
	.attach = partita_rproc_attach,
	.kick = partita_rproc_kick,
	.parse_fw = partita_rproc_parse_fw,
	.get_loaded_rsc_table = partita_rproc_get_loaded_rsc_table,
	.sanity_check = partita_rproc_sanity_check,
	.load = partita_rproc_load,
};

/*
 * The partition powered itself off: remoteproc shuts it down (its vdev and
 * channels go, sysfs says offline), unless it was stopped or started again
 * meanwhile. Not from the interrupt thread, which holds remoteproc's lock.
 */
static void partita_rproc_ended(struct work_struct *work)
{
	struct partita_rproc *p = container_of(work, struct partita_rproc,
					       ended);
	enum rproc_state rs = READ_ONCE(p->rproc->state);

	if ((rs == RPROC_RUNNING || rs == RPROC_ATTACHED) &&
	    partita_status(p) == PARTITA_STOPPED) {
		dev_info(&p->rproc->dev, "%s powered itself off\n",
			 p->rproc->name);
		rproc_shutdown(p->rproc);
	}
}

/*
 * The system powers off or reboots: a shutdown that a partition's own
 * power-off started must end before device_shutdown() walks the devices.
 * Run beside it, it can unbind the remoteproc vdev while device_shutdown()
 * holds a reference to its virtio device, whose release, run when that
 * reference goes, then finds no vdev (an Oops in rproc_virtio_dev_release).
 * The interrupt thread schedules the work under rproc->lock, so after
 * `closing` is set under it none is scheduled again.
 */
static int partita_rproc_reboot(struct notifier_block *nb,
				unsigned long action, void *data)
{
	struct partita_rproc *p = container_of(nb, struct partita_rproc,
					       reboot);

	mutex_lock(&p->rproc->lock);
	p->closing = true;
	mutex_unlock(&p->rproc->lock);
	flush_work(&p->ended);
	return NOTIFY_DONE;
}

/*
 * The control interrupt: a state change (a crash is remoteproc's to
 * handle) or used buffers in the vrings. Threaded, so rpmsg's callbacks
 * run in process context, where announced channels can be created; and
 * under remoteproc's lock, which a boot or attach holds throughout: what
 * arrives while it brings the vdev up is taken once it is running, not
 * dropped.
 */
static irqreturn_t partita_rproc_irq(int irq, void *data)
{
	struct partita_rproc *p = data;
	struct rproc *rproc = p->rproc;
	long s;
	int i;

	mutex_lock(&rproc->lock);
	if (rproc->state != RPROC_RUNNING && rproc->state != RPROC_ATTACHED)
		goto out;
	s = partita_status(p);
	if (s == PARTITA_CRASHED) {
		dev_err(&rproc->dev, "%s crashed\n", rproc->name);
		rproc_report_crash(rproc, RPROC_FATAL_ERROR);
		goto out;
	}
	/* Stopped while remoteproc has it running: it powered itself off. */
	if (s == PARTITA_STOPPED) {
		if (!p->closing)
			schedule_work(&p->ended);
		goto out;
	}
	for (i = 0; p->vdev && i <= rproc->max_notifyid; i++)
		rproc_vq_interrupt(rproc, i);
out:
	mutex_unlock(&rproc->lock);
	return IRQ_HANDLED;
}

static int partita_rproc_add(struct device *dev, struct device_node *np)
{
	struct partita_rproc *p;
	struct rproc *rproc;
	const char *label, *fw;
	u32 id;
	int irq, ret;

	if (of_property_read_u32(np, "reg", &id))
		return dev_err_probe(dev, -EINVAL, "%pOF: no reg\n", np);
	if (of_property_read_string(np, "label", &label))
		return dev_err_probe(dev, -EINVAL, "%pOF: no label\n", np);
	fw = devm_kasprintf(dev, GFP_KERNEL, "%s.elf", label);
	if (!fw)
		return -ENOMEM;

	rproc = devm_rproc_alloc(dev, label, &partita_rproc_ops, fw,
				 sizeof(*p));
	if (!rproc)
		return -ENOMEM;
	p = rproc->priv;
	p->rproc = rproc;
	p->id = id;
	p->vdev = of_property_read_bool(np, "partita,rpmsg-vdev");
	p->subdev.stop = partita_subdev_stop;
	ret = devm_work_autocancel(dev, &p->ended, partita_rproc_ended);
	if (ret)
		return ret;
	p->reboot.notifier_call = partita_rproc_reboot;
	ret = devm_register_reboot_notifier(dev, &p->reboot);
	if (ret)
		return ret;

	ret = partita_status(p);
	if (ret < 0)
		return dev_err_probe(dev, partita_errno(rproc, "STATUS", ret),
				     "cannot control partition %u\n", id);
	/* Running before us: attached at registration (auto_boot). */
	if (ret == PARTITA_RUNNING || ret == PARTITA_LOADING)
		rproc->state = RPROC_DETACHED;
	else
		rproc->auto_boot = false;

	irq = of_irq_get(np, 0);
	if (irq > 0) {
		ret = devm_request_threaded_irq(dev, irq, NULL,
						partita_rproc_irq, IRQF_ONESHOT,
						label, p);
		if (ret)
			return dev_err_probe(dev, ret, "%s: control interrupt\n",
					     label);
	} else if (p->vdev) {
		return dev_err_probe(dev, -EINVAL,
				     "%s: an rpmsg vdev needs the control interrupt\n",
				     label);
	} else {
		dev_warn(dev, "%s: no control interrupt, crashes go unseen\n",
			 label);
	}

	ret = devm_rproc_add(dev, rproc);
	if (ret)
		return dev_err_probe(dev, ret, "%s: rproc_add\n", label);
	dev_info(dev, "partition %u (%s) is %s, firmware %s\n", id, label,
		 dev_name(&rproc->dev), fw);
	return 0;
}

/* One remote processor per partition node under /hypervisor. */
static int partita_rproc_probe(struct platform_device *pdev)
{
	struct device_node *np;
	int ret;

	for_each_available_child_of_node(pdev->dev.of_node, np) {
		if (!of_device_is_compatible(np, "partita,partition"))
			continue;
		ret = partita_rproc_add(&pdev->dev, np);
		if (ret) {
			of_node_put(np);
			return ret;
		}
	}
	return 0;
}

static const struct of_device_id partita_rproc_of_match[] = {
	{ .compatible = "partita,hypervisor" },
	{ }
};
MODULE_DEVICE_TABLE(of, partita_rproc_of_match);

static struct platform_driver partita_rproc_driver = {
	.probe = partita_rproc_probe,
	.driver = {
		.name = "partita-rproc",
		.of_match_table = partita_rproc_of_match,
	},
};
module_platform_driver(partita_rproc_driver);

MODULE_DESCRIPTION("Partita partitions as remote processors");
MODULE_LICENSE("GPL");
