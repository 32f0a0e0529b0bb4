//! Kinds of Linux domain. Today there is one: the paravirtual domain, whose kernel is the VMM
//! (see the crate documentation). Booting a real kernel image (a bzImage, with its own ring 0)
//! needs hardware virtualization, which the host this was built on does not have (ring 0 is
//! emulated an instruction at a time there); it will be a second kind beside this one, chosen
//! by the session's requirements, and is refused until then with a message saying so.

use crate::error::Error;
use xeno_schemas::documents::{Document, EnvironmentalRequirements};

/// The `Extensions` element (any namespace) by which requirements ask for a kernel image.
pub const KERNEL_IMAGE_ELEMENT: &str = "KernelImage";

/// A kind of Linux domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DomainKind {
    /// The VMM is the kernel; tasks are static executables run in ring 3.
    Paravirtual,
    /// A Linux kernel image booted in the domain (not implemented yet).
    KernelImage,
}

/// The kind of domain `requirements_xml` asks for (paravirtual unless an `Extensions` child
/// named [`KERNEL_IMAGE_ELEMENT`] asks for a kernel image).
pub(crate) fn requested(requirements_xml: &str) -> Result<DomainKind, Error> {
    if requirements_xml.trim().is_empty() {
        return Ok(DomainKind::Paravirtual);
    }
    let requirements = EnvironmentalRequirements::parse(requirements_xml.as_bytes())
        .map_err(|errors| Error::Invalid(format!("EnvironmentalRequirements: {errors}")))?;
    let asks_image = requirements
        .extensions
        .iter()
        .any(|element| element.name.rsplit(':').next() == Some(KERNEL_IMAGE_ELEMENT));
    Ok(if asks_image {
        DomainKind::KernelImage
    } else {
        DomainKind::Paravirtual
    })
}

/// The root file system image `requirements_xml` names (`Basic/EnvImage`), if any.
pub(crate) fn image_requested(requirements_xml: &str) -> Result<Option<String>, Error> {
    if requirements_xml.trim().is_empty() {
        return Ok(None);
    }
    let requirements = EnvironmentalRequirements::parse(requirements_xml.as_bytes())
        .map_err(|errors| Error::Invalid(format!("EnvironmentalRequirements: {errors}")))?;
    Ok(requirements.image)
}

/// Refuses kinds not implemented yet.
pub(crate) fn check_supported(kind: DomainKind) -> Result<(), Error> {
    match kind {
        DomainKind::Paravirtual => Ok(()),
        DomainKind::KernelImage => Err(Error::Unsupported(
            "booting Linux kernel images is not supported yet: it needs hardware virtualization \
             (this task manager runs paravirtual domains, whose kernel is the VMM; ask for \
             static executables instead)"
                .to_owned(),
        )),
    }
}
